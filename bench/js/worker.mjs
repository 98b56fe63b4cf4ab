// Benchmark contender: camunda-worker's job done with the official Camunda 7 JS client.
//
// Subscribes to `messageSending`; each task is completed with typed variables var1 (Integer 1) and
// var2 (String "value"), then `sample_response` is correlated by business key 2 s later
// (setTimeout + Node's fetch).
//
//   node worker.mjs BASE_URL [maxTasks=64] [maxParallelExecutions=64] [asyncResponseTimeoutMs=30000] [delayMs=2000]
import { Client, Variables } from "camunda-external-task-client-js";

const [baseUrlArg, maxTasksArg, maxParallelArg, asyncArg, delayArg] = process.argv.slice(2);
if (!baseUrlArg) {
  console.error("usage: node worker.mjs BASE_URL [MAX_TASKS] [MAX_PARALLEL] [ASYNC_RESPONSE_TIMEOUT_MS] [DELAY_MS]");
  process.exit(2);
}
const baseUrl = baseUrlArg.replace(/\/+$/, "");
const maxTasks = Number(maxTasksArg ?? 64);
const maxParallelExecutions = Number(maxParallelArg ?? 64);
const asyncResponseTimeout = Number(asyncArg ?? 30000);
const delayMs = Number(delayArg ?? 2000);

const client = new Client({
  baseUrl,
  workerId: `bench-js-${process.pid}`,
  maxTasks,
  maxParallelExecutions,
  asyncResponseTimeout,
  lockDuration: 60000,
});

let failures = 0;
function report(what) {
  failures += 1;
  if (failures <= 10) console.error(what);
}

async function sendMessage(businessKey) {
  try {
    const response = await fetch(`${baseUrl}/message`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ messageName: "sample_response", businessKey }),
      signal: AbortSignal.timeout(30000),
    });
    if (response.status !== 204) report(`message for ${businessKey}: HTTP ${response.status} ${await response.text()}`);
    else await response.arrayBuffer();
  } catch (error) {
    report(`message for ${businessKey} failed: ${error}`);
  }
}

client.subscribe("messageSending", async ({ task, taskService }) => {
  const variables = new Variables()
    .setTyped("var1", { type: "Integer", value: 1, valueInfo: {} })
    .setTyped("var2", { type: "String", value: "value", valueInfo: {} });
  await taskService.complete(task, variables);
  const businessKey = task.businessKey;
  setTimeout(() => { sendMessage(businessKey); }, delayMs);
});

client.on("poll:error", (e) => report(`poll error: ${e}`));
client.on("complete:error", (_task, e) => report(`complete error: ${e}`));
console.error(`js client worker polling ${baseUrl} (maxTasks ${maxTasks}, maxParallelExecutions ${maxParallelExecutions}, asyncResponseTimeout ${asyncResponseTimeout} ms)`);

for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => { client.stop(); process.exit(0); });
}
