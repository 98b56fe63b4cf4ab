package io.camundaworker.engine;

import jakarta.servlet.Filter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Instant;
import java.util.Map;
import java.util.Optional;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.boot.autoconfigure.condition.ConditionalOnProperty;
import org.springframework.boot.context.event.ApplicationEnvironmentPreparedEvent;
import org.springframework.boot.web.servlet.FilterRegistrationBean;
import org.springframework.context.ApplicationListener;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.core.env.ConfigurableEnvironment;
import org.springframework.core.env.Environment;
import org.springframework.core.env.MapPropertySource;

/**
 * Test-harness knobs, all under {@code camunda-worker-engine.*}:
 *
 * <ul>
 *   <li>{@code basic-auth=true}: HTTP Basic auth on /engine-rest/* via the engine's own
 *       ProcessEngineAuthenticationFilter (as Camunda Run does); GET /engine-rest/engine stays
 *       anonymous.
 *   <li>{@code h2-file=/path/db}: file-backed H2 instead of in-memory (state survives restarts).
 *   <li>{@code parent-pid=N}: exit when process N is gone.
 * </ul>
 *
 * <p>Class names are properties (set per flavor in engine-flavor.yaml) so the same source works for
 * org.camunda and org.operaton packages.
 */
@Configuration(proxyBeanMethods = false)
public class EngineConfig {

  private static final Logger LOG = LoggerFactory.getLogger(EngineConfig.class);
  private static final String PREFIX = "camunda-worker-engine.";

  @Bean
  @ConditionalOnProperty(name = PREFIX + "basic-auth", havingValue = "true")
  public FilterRegistrationBean<Filter> engineRestBasicAuthFilter(Environment env)
      throws ReflectiveOperationException {
    String filterClass = env.getRequiredProperty(PREFIX + "auth-filter-class");
    String providerClass = env.getRequiredProperty(PREFIX + "auth-provider-class");
    Filter filter = (Filter) Class.forName(filterClass).getDeclaredConstructor().newInstance();
    FilterRegistrationBean<Filter> registration = new FilterRegistrationBean<>(filter);
    registration.setName("camunda-worker-engine-rest-auth");
    registration.setAsyncSupported(true); // fetchAndLock long polling is an async request
    registration.addInitParameter("authentication-provider", providerClass);
    registration.addUrlPatterns("/engine-rest/*");
    LOG.info("HTTP Basic authentication enabled on /engine-rest/* ({})", providerClass);
    return registration;
  }

  /** Runs once the Environment is prepared, before the application context (and engine) starts. */
  static final class EarlySetup implements ApplicationListener<ApplicationEnvironmentPreparedEvent> {

    @Override
    public void onApplicationEvent(ApplicationEnvironmentPreparedEvent event) {
      ConfigurableEnvironment env = event.getEnvironment();
      String h2File = env.getProperty(PREFIX + "h2-file", "").trim();
      if (!h2File.isEmpty()) {
        String path = Path.of(h2File.replaceFirst("\\.mv\\.db$", "")).toAbsolutePath().toString();
        String url = "jdbc:h2:file:" + path + ";DB_CLOSE_ON_EXIT=FALSE";
        // Lowest precedence: an explicit spring.datasource.url still wins.
        env.getPropertySources()
            .addLast(new MapPropertySource("camunda-worker-engine-h2-file",
                Map.of("spring.datasource.url", url,
                       "spring.datasource.username", "sa",
                       "spring.datasource.password", "")));
        LOG.info("Using file-backed H2: {}", url);
      }
      String parentPid = env.getProperty(PREFIX + "parent-pid", "").trim();
      if (!parentPid.isEmpty()) {
        startParentWatchdog(Long.parseLong(parentPid));
      }
    }
  }

  private static volatile boolean watchdogStarted;

  static synchronized void startParentWatchdog(long pid) {
    if (watchdogStarted) {
      return;
    }
    watchdogStarted = true;
    Optional<Instant> startedAt = ProcessHandle.of(pid).flatMap(p -> p.info().startInstant());
    Thread watchdog = new Thread(() -> {
      while (true) {
        if (!isAlive(pid, startedAt)) {
          LOG.warn("Parent process {} is gone: shutting down", pid);
          Thread halt = new Thread(() -> {
            sleep(20_000);
            Runtime.getRuntime().halt(3); // shutdown hooks hung: do not outlive the parent
          }, "parent-pid-watchdog-halt");
          halt.setDaemon(true);
          halt.start();
          System.exit(3);
        }
        sleep(1_000);
      }
    }, "parent-pid-watchdog");
    watchdog.setDaemon(true);
    watchdog.start();
    LOG.info("Watching parent process {}", pid);
  }

  private static boolean isAlive(long pid, Optional<Instant> startedAt) {
    Optional<ProcessHandle> handle = ProcessHandle.of(pid);
    if (handle.isEmpty() || !handle.get().isAlive()) {
      return false;
    }
    // Same pid but a different process (pid reuse)?
    Optional<Instant> now = handle.get().info().startInstant();
    if (startedAt.isPresent() && now.isPresent() && !startedAt.get().equals(now.get())) {
      return false;
    }
    // Linux: an exited but not yet reaped parent is a zombie, which Java still reports as alive.
    try {
      Path stat = Path.of("/proc", Long.toString(pid), "stat");
      if (Files.exists(stat)) {
        String s = Files.readString(stat);
        int close = s.lastIndexOf(')');
        if (close > 0 && close + 2 < s.length()) {
          char state = s.charAt(close + 2);
          if (state == 'Z' || state == 'X') {
            return false;
          }
        }
      }
    } catch (Exception ignored) {
      // not Linux, or the process vanished meanwhile: the next round decides
    }
    return true;
  }

  private static void sleep(long millis) {
    try {
      Thread.sleep(millis);
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
    }
  }
}
