package io.camundaworker.engine;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;

/**
 * Camunda 7 (or a fork) embedded in Spring Boot: REST API at /engine-rest, Cockpit/Tasklist at
 * /camunda, H2 in memory (or in a file). Used by camunda-worker's tests and benchmarks.
 */
@SpringBootApplication
public class EngineApplication {

  public static void main(String[] args) {
    SpringApplication app = new SpringApplication(EngineApplication.class);
    // Runs as soon as the Environment is known, i.e. before the engine starts:
    // maps camunda-worker-engine.h2-file to a datasource URL and starts the parent-pid watchdog.
    app.addListeners(new EngineConfig.EarlySetup());
    app.run(args);
  }
}
