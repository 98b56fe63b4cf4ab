package bench;

import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import org.camunda.bpm.client.ExternalTaskClient;
import org.camunda.bpm.engine.variable.Variables;

/**
 * Benchmark contender: camunda-worker's job done with the official Camunda 7 Java client.
 *
 * <p>Subscribes to {@code messageSending}; each task is completed with var1 (Integer 1) and var2
 * (String "value"), and 2 s later (configurable) {@code sample_response} is correlated by business
 * key with java.net.http.HttpClient from a ScheduledExecutorService.
 *
 * <p>Arguments: baseUrl [maxTasks=64] [asyncResponseTimeoutMs=30000] [delayMs=2000]
 */
public final class JavaClientWorker {

  public static void main(String[] args) throws Exception {
    if (args.length < 1) {
      System.err.println("usage: java -jar java-client-worker.jar BASE_URL [MAX_TASKS] [ASYNC_RESPONSE_TIMEOUT_MS] [DELAY_MS]");
      System.exit(2);
    }
    String baseUrl = args[0].replaceAll("/+$", "");
    int maxTasks = args.length > 1 ? Integer.parseInt(args[1]) : 64;
    long asyncResponseTimeout = args.length > 2 ? Long.parseLong(args[2]) : 30000L;
    long delayMs = args.length > 3 ? Long.parseLong(args[3]) : 2000L;

    HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(10)).build();
    ScheduledExecutorService scheduler = Executors.newScheduledThreadPool(2);
    URI messageUri = URI.create(baseUrl + "/message");
    AtomicLong failures = new AtomicLong();

    ExternalTaskClient client = ExternalTaskClient.create()
        .baseUrl(baseUrl)
        .workerId("bench-java-" + ProcessHandle.current().pid())
        .maxTasks(maxTasks)
        .asyncResponseTimeout(asyncResponseTimeout)
        .lockDuration(60000)
        .build();

    client.subscribe("messageSending")
        .handler((task, service) -> {
          Map<String, Object> variables = new HashMap<>();
          variables.put("var1", Variables.integerValue(1));
          variables.put("var2", Variables.stringValue("value"));
          service.complete(task, variables);
          String businessKey = task.getBusinessKey();
          String body = "{\"messageName\":\"sample_response\",\"businessKey\":\"" + businessKey + "\"}";
          scheduler.schedule(() -> {
            HttpRequest request = HttpRequest.newBuilder(messageUri)
                .timeout(Duration.ofSeconds(30))
                .header("Content-Type", "application/json")
                .POST(HttpRequest.BodyPublishers.ofString(body))
                .build();
            http.sendAsync(request, HttpResponse.BodyHandlers.discarding())
                .whenComplete((response, error) -> {
                  if (error != null || response.statusCode() != 204) {
                    if (failures.incrementAndGet() <= 10) {
                      System.err.println("message for " + businessKey + " failed: "
                          + (error != null ? error : "HTTP " + response.statusCode()));
                    }
                  }
                });
          }, delayMs, TimeUnit.MILLISECONDS);
        })
        .open();

    System.err.println("java client worker polling " + baseUrl + " (maxTasks " + maxTasks
        + ", asyncResponseTimeout " + asyncResponseTimeout + " ms)");
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      client.stop();
      scheduler.shutdownNow();
    }));
    Thread.currentThread().join();
  }
}
