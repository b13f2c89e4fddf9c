// The NestJS peer of syncbridge's interop tests (interop/README.md), in one
// process:
//
//   - a responder: a @MessagePattern handler on PREFIX.nest.requests that
//     answers "echo:" + value, or, for values starting with "fail", throws an
//     RpcException({code: 'refused', message}), which NestJS sends as the
//     kafka_nest-err header;
//   - callers: two ClientKafka replicas (one consumer group, so each owns
//     some partitions of the reply topic and names its lowest one in
//     kafka_replyPartition, as decimal ASCII) that send requests to a
//     syncbridge Responder on PREFIX.gonest.requests.
//
// Driven over stdin/stdout by the Go driver (interop/main.go): it prints
// READY once the responder's consumer has joined its group, then runs
// "call MODE N" commands, printing one "RESULT {json}" line for each, and
// exits at the end of stdin.
import 'reflect-metadata';
import { createInterface } from 'node:readline';
import { Controller, Logger, Module } from '@nestjs/common';
import { NestFactory } from '@nestjs/core';
import {
  ClientKafka,
  KafkaOptions,
  MessagePattern,
  Payload,
  RpcException,
  ServerKafka,
} from '@nestjs/microservices';
import { lastValueFrom, timeout } from 'rxjs';

process.env.KAFKAJS_NO_PARTITIONER_WARNING = '1';
Logger.overrideLogger(['error', 'warn']);

const [brokers, prefix] = process.argv.slice(2);
if (!brokers || !prefix) {
  console.error('usage: node dist/main.js BROKERS PREFIX');
  process.exit(2);
}
const REQUESTS = `${prefix}.nest.requests`; // served here
const GO_REQUESTS = `${prefix}.gonest.requests`; // served by a syncbridge Responder

function say(line: string) {
  process.stdout.write(line + '\n');
}

@Controller()
class EchoController {
  @MessagePattern(REQUESTS)
  handle(@Payload() value: string): string {
    if (value.startsWith('fail')) {
      throw new RpcException({ code: 'refused', message: `no: ${value}` });
    }
    return `echo:${value}`;
  }
}

@Module({ controllers: [EchoController] })
class AppModule {}

// ServerKafka that says when its consumer has joined its group.
class ReadyServerKafka extends ServerKafka {
  joined: Promise<void>;
  private resolveJoined!: () => void;
  constructor(options: KafkaOptions['options']) {
    super(options ?? {});
    this.joined = new Promise((resolve) => (this.resolveJoined = resolve));
  }
  registerConsumerEventListeners() {
    super.registerConsumerEventListeners();
    this.consumer!.on(this.consumer!.events.GROUP_JOIN, () => this.resolveJoined());
  }
}

// ClientKafka that counts the replies it cannot match: with two replicas
// in one group, a reply written to a partition the other replica owns
// arrives there, unknown.
class CountingClientKafka extends ClientKafka {
  unmatched = 0;
  createResponseCallback() {
    const inner = super.createResponseCallback();
    return async (payload: Parameters<ReturnType<ClientKafka['createResponseCallback']>>[0]) => {
      const id = payload.message.headers?.['kafka_correlationId']?.toString();
      if (id !== undefined && !this.routingMap.has(id)) {
        this.unmatched++;
      }
      return inner(payload);
    };
  }
  replyPartition(topic: string): number | undefined {
    return this.getConsumerAssignments()[topic];
  }
}

const kafkaClient = { brokers: [brokers], clientId: 'interop-nest', retry: { retries: 10 } };

async function waitFor(what: string, ok: () => boolean, ms = 60000) {
  const until = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > until) {
      throw new Error(`${what}: not after ${ms} ms`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

// Sends n requests (every other one failing) from two ClientKafka replicas
// to a syncbridge Responder and counts the outcomes.
async function call(mode: string, n: number) {
  const t0 = Date.now();
  const group = `interop-nest-caller-${prefix}-${mode}`;
  const replyTopic = `${GO_REQUESTS}.reply`;
  const replicas = [0, 1].map(
    () =>
      new CountingClientKafka({
        client: kafkaClient,
        // maxWaitTimeInMs: an idle fetch returns sooner, so close() is quicker
        consumer: { groupId: group, maxWaitTimeInMs: 500 },
        subscribe: { fromBeginning: true },
      }),
  );
  for (const c of replicas) {
    c.subscribeToResponseOf(GO_REQUESTS);
    await c.connect();
  }
  await waitFor('reply partitions of both replicas', () => {
    const [a, b] = replicas.map((c) => c.replyPartition(replyTopic));
    return a !== undefined && b !== undefined && a !== b;
  });
  console.error(`nestjs ${mode}: replicas ready in ${Date.now() - t0} ms`);
  const counts = { correct: 0, misrouted: 0, errorsSent: 0, errorsAsErrors: 0, lost: 0, wrong: 0 };
  const nonce = Math.random().toString(36).slice(2, 10);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < n; i = next++) {
      const fail = i % 2 === 1;
      if (fail) counts.errorsSent++;
      const payload = `${fail ? 'fail' : 'ok'}-nest-${mode}-${i}-${nonce}`;
      const client = replicas[Math.floor(i / 2) % 2]; // each replica sends successes and errors
      try {
        const reply = await lastValueFrom(client.send(GO_REQUESTS, payload).pipe(timeout(30000)));
        const echo = reply === `echo:${payload}`;
        if (!echo && typeof reply === 'string' && reply.startsWith('echo:')) counts.misrouted++; // another request's
        else if (!echo || fail) counts.wrong++; // an error that arrived as a success (empty or not)
        else counts.correct++;
      } catch (err: any) {
        if (err && typeof err === 'object' && typeof err.message === 'string' && 'status' in err) {
          // a kafka_nest-err object: {status, message, code}
          if (err.message !== `no: ${payload}`) counts.misrouted++;
          else if (fail && err.code === 'refused') {
            counts.correct++;
            counts.errorsAsErrors++;
          } else counts.wrong++;
        } else {
          counts.lost++; // TimeoutError, EmptyError (completed without a value), send failure
          console.error(`nest ${mode} ${payload}: ${err}`);
        }
      }
    }
  };
  await Promise.all(Array.from({ length: 64 }, worker));
  console.error(`nestjs ${mode}: requests done in ${Date.now() - t0} ms`);
  counts.misrouted += replicas.reduce((s, c) => s + c.unmatched, 0);
  await Promise.all(replicas.map((c) => c.close()));
  console.error(`nestjs ${mode}: replicas closed in ${Date.now() - t0} ms`);
  return JSON.stringify({ peer: 'nestjs', direction: 'nestjs->go', mode, sent: n, ...counts });
}

async function main() {
  const server = new ReadyServerKafka({
    client: kafkaClient,
    consumer: { groupId: 'interop-nest-responders' },
    subscribe: { fromBeginning: true },
    run: { partitionsConsumedConcurrently: 3 },
  });
  const app = await NestFactory.createMicroservice(AppModule, { strategy: server, logger: ['error', 'warn'] });
  await app.listen();
  await server.joined;
  say('READY');
  const lines = createInterface({ input: process.stdin });
  for await (const line of lines) {
    const cmd = line.trim().split(' ');
    if (cmd.length === 3 && cmd[0] === 'call') {
      say('RESULT ' + (await call(cmd[1], Number(cmd[2]))));
    } else if (line.trim() !== '') {
      say(`ERROR unknown command ${line}`);
    }
  }
  await app.close();
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
