// The official QStash JS client (@upstash/qstash) against `hopflow qstash-dev`.
// Run by tests/test_qstash_js.py: QSTASH_URL, QSTASH_TOKEN, TARGET (a recording endpoint),
// QSTASH_CURRENT_SIGNING_KEY / QSTASH_NEXT_SIGNING_KEY. Prints one JSON document of what it saw;
// any client error (a status, a response shape it cannot read) makes it exit non-zero.
import { Client, Receiver } from "@upstash/qstash";

const env = process.env;
const client = new Client({ baseUrl: env.QSTASH_URL, token: env.QSTASH_TOKEN, retry: false });
const target = env.TARGET;
const out = {};

const first = await client.publishJSON({
  url: `${target}/js/one`,
  body: { hello: "js" },
  headers: { "X-From": "js" },
  deduplicationId: "js-dedup-1",
});
out.first = first;
out.duplicate = await client.publishJSON({
  url: `${target}/js/one`,
  body: { hello: "js" },
  deduplicationId: "js-dedup-1",
});

out.batch = await client.batchJSON([
  { url: `${target}/js/b0`, body: { i: 0 } },
  { url: `${target}/js/b1`, body: { i: 1 }, method: "PUT" },
]);

const later = await client.publishJSON({ url: `${target}/js/later`, body: {}, delay: 3600 });
const got = await client.messages.get(later.messageId);
out.later = { messageId: got.messageId, url: got.url, notBefore: got.notBefore };
await client.messages.delete(later.messageId);
out.laterGone = await client.messages.get(later.messageId).then(() => false, () => true);

const more = [];
for (let i = 0; i < 2; i++) {
  more.push((await client.publishJSON({ url: `${target}/js/many${i}`, body: {}, delay: 3600 })).messageId);
}
out.cancelled = await client.messages.cancel(more);

const failing = await client.publishJSON({ url: `${target}/js/fail`, body: { bad: true }, retries: 0 });
let dlq = [];
for (let i = 0; i < 200 && dlq.length === 0; i++) {
  const page = await client.dlq.listMessages();
  dlq = page.messages.filter((m) => m.messageId === failing.messageId);
  if (dlq.length === 0) await new Promise((r) => setTimeout(r, 50));
}
out.dlq = dlq.map((m) => ({ messageId: m.messageId, responseStatus: m.responseStatus, dlqId: m.dlqId }));
out.dlqDeleted = await client.dlq.delete([dlq[0].dlqId, "no-such-dlq-id"]);

// schedules: create (with a time zone), update in place by id, get, list, pause/resume, delete
const scheduleId = "js-schedule.1";
await client.schedules.create({
  destination: `${target}/js/scheduled`,
  cron: "CRON_TZ=Europe/Lisbon 0 9 * * 1-5",
  scheduleId,
  body: JSON.stringify({ from: "js" }),
  headers: { "Content-Type": "application/json" },
});
await client.schedules.create({ destination: `${target}/js/moved`, cron: "*/5 * * * *", scheduleId });
const schedule = await client.schedules.get(scheduleId);
out.schedule = { cron: schedule.cron, destination: schedule.destination, body: schedule.body ?? null };
await client.schedules.pause({ schedule: scheduleId });
out.schedulePaused = (await client.schedules.get(scheduleId)).isPaused;
await client.schedules.resume({ schedule: scheduleId });
out.scheduleResumed = !(await client.schedules.get(scheduleId)).isPaused;
out.scheduleIds = (await client.schedules.list()).map((s) => s.scheduleId);
await client.schedules.delete(scheduleId);
out.schedulesLeft = (await client.schedules.list()).length;

// the Receiver verifies a delivery the dev server signed (handed over by the test)
if (env.SIGNED_BODY) {
  const receiver = new Receiver({
    currentSigningKey: env.QSTASH_CURRENT_SIGNING_KEY,
    nextSigningKey: env.QSTASH_NEXT_SIGNING_KEY,
  });
  out.verified = await receiver.verify({
    signature: env.SIGNED_SIGNATURE,
    body: env.SIGNED_BODY,
    url: env.SIGNED_URL,
  });
}

console.log(JSON.stringify(out));
