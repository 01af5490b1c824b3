// A child process that holds a slot: `node holder.js DSN NAME SECONDS GRACE`; prints "held",
// then "released" (or is killed meanwhile).
import { Client } from "../src/index.js";

const [dsn, name, seconds, grace] = process.argv.slice(2) as [string, string, string, string];
const client = new Client(dsn, { graceSeconds: Number(grace) });
await client.concurrency(name, { timeoutSeconds: 30 }, async () => {
  console.log("held");
  await new Promise((r) => setTimeout(r, Number(seconds) * 1000));
});
console.log("released");
await client.close();
