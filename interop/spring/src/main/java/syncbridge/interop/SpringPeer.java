package syncbridge.interop;

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

import org.springframework.context.annotation.AnnotationConfigApplicationContext;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.kafka.annotation.EnableKafka;
import org.springframework.kafka.annotation.KafkaListener;
import org.springframework.kafka.config.ConcurrentKafkaListenerContainerFactory;
import org.springframework.kafka.config.KafkaListenerEndpointRegistry;
import org.springframework.kafka.core.ConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaProducerFactory;
import org.springframework.kafka.core.KafkaTemplate;
import org.springframework.kafka.core.ProducerFactory;
import org.springframework.kafka.listener.ContainerProperties;
import org.springframework.kafka.listener.KafkaListenerErrorHandler;
import org.springframework.kafka.listener.KafkaMessageListenerContainer;
import org.springframework.kafka.listener.MessageListenerContainer;
import org.springframework.kafka.requestreply.ReplyingKafkaTemplate;
import org.springframework.kafka.support.TopicPartitionOffset;
import org.springframework.messaging.handler.annotation.SendTo;
import org.springframework.messaging.support.MessageBuilder;

/**
 * The Spring Kafka peer of syncbridge's interop tests, in one JVM:
 *
 * <ul>
 * <li>a responder: a {@code @KafkaListener} with {@code @SendTo} on
 * {@code PREFIX.spring.requests} that answers {@code "echo:" + value}, or, for
 * values starting with "fail", throws; its listener {@code errorHandler}
 * turns the exception into syncbridge's error headers;</li>
 * <li>callers: {@code ReplyingKafkaTemplate}s that send requests to a syncbridge
 * Responder on {@code PREFIX.gospring.requests}, with a
 * {@code replyErrorChecker} that turns syncbridge's error headers into an
 * exception.</li>
 * </ul>
 *
 * Driven over stdin/stdout by the Go driver (interop/main.go): it prints
 * {@code READY} once the listener has its partitions, then runs
 * {@code call MODE N} commands, printing one {@code RESULT {json}} line for
 * each, and exits at the end of stdin.
 */
public final class SpringPeer {

	static final String ERROR_CODE = "syncbridge_errorCode";

	static final String ERROR_DESCRIPTION = "syncbridge_errorDescription";

	static String brokers;

	static String prefix;

	public static void main(String[] args) throws Exception {
		brokers = args[0];
		prefix = args[1];
		System.setProperty("interop.springRequests", prefix + ".spring.requests");
		try (AnnotationConfigApplicationContext ctx = new AnnotationConfigApplicationContext(Config.class)) {
			MessageListenerContainer listener = ctx.getBean(KafkaListenerEndpointRegistry.class)
					.getListenerContainer("interop-spring-responder");
			long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
			while (listener.getAssignedPartitions() == null || listener.getAssignedPartitions().size() < 3) {
				if (System.nanoTime() > until) {
					throw new IllegalStateException("listener got no partitions in 60 s");
				}
				Thread.sleep(50);
			}
			say("READY");
			BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
			for (String line; (line = in.readLine()) != null;) {
				String[] cmd = line.trim().split(" ");
				if (cmd.length == 3 && cmd[0].equals("call")) {
					say("RESULT " + call(ctx.getBean(ConsumerFactory.class), ctx.getBean(ProducerFactory.class), cmd[1],
							Integer.parseInt(cmd[2])));
				}
				else if (!line.isBlank()) {
					say("ERROR unknown command " + line);
				}
			}
		}
	}

	static synchronized void say(String line) {
		System.out.println(line);
		System.out.flush();
	}

	/** The responder's application: a Spring bean with a listener. */
	public static class Echo {

		/**
		 * Answers "echo:" + value; throws for values starting with "fail".
		 * With no value, {@code @SendTo} replies to the request's
		 * kafka_replyTopic, on its kafka_replyPartition when it has one.
		 */
		@KafkaListener(id = "interop-spring-responder", topics = "${interop.springRequests}",
				errorHandler = "syncbridgeErrors", concurrency = "3")
		@SendTo
		public String handle(String value) {
			if (value.startsWith("fail")) {
				throw new Refused("no: " + value);
			}
			return "echo:" + value;
		}

	}

	/** An application error with a code of its own. */
	static final class Refused extends RuntimeException {

		Refused(String message) {
			super(message);
		}

	}

	/** syncbridge's error reply, as a Spring caller's replyErrorChecker returns it. */
	static final class RemoteException extends RuntimeException {

		final String code;

		final String description;

		final int partition; // of the reply

		RemoteException(String code, String description, int partition) {
			super(code + ": " + description);
			this.code = code;
			this.description = description;
			this.partition = partition;
		}

	}

	@Configuration
	@EnableKafka
	public static class Config {

		@Bean
		public ProducerFactory<String, String> producerFactory() {
			Map<String, Object> p = new HashMap<>();
			p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
			p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
			p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class);
			p.put(ProducerConfig.LINGER_MS_CONFIG, 1);
			return new DefaultKafkaProducerFactory<>(p);
		}

		@Bean
		public KafkaTemplate<String, String> kafkaTemplate(ProducerFactory<String, String> pf) {
			return new KafkaTemplate<>(pf);
		}

		@Bean
		public ConsumerFactory<String, String> consumerFactory() {
			Map<String, Object> c = new HashMap<>();
			c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, brokers);
			c.put(ConsumerConfig.GROUP_ID_CONFIG, "interop-spring-responders");
			// Every run uses topics of its own: nothing old to skip.
			c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
			c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
			c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
			return new DefaultKafkaConsumerFactory<>(c);
		}

		@Bean
		public ConcurrentKafkaListenerContainerFactory<String, String> kafkaListenerContainerFactory(
				ConsumerFactory<String, String> cf, KafkaTemplate<String, String> template) {
			ConcurrentKafkaListenerContainerFactory<String, String> f = new ConcurrentKafkaListenerContainerFactory<>();
			f.setConsumerFactory(cf);
			f.setReplyTemplate(template);
			return f;
		}

		@Bean
		public Echo echo() {
			return new Echo();
		}

		/**
		 * The listener error handler a Spring responder needs for a syncbridge
		 * caller: without it a listener that throws sends no reply (the
		 * container retries, then gives up) and the caller only times out.
		 * Header values are byte[], which every Kafka header mapper sends as
		 * they are.
		 */
		@Bean
		public KafkaListenerErrorHandler syncbridgeErrors() {
			return (message, exception) -> {
				Throwable cause = exception.getCause() != null ? exception.getCause() : exception;
				String code = cause instanceof Refused ? "refused" : "internal";
				return MessageBuilder.withPayload("")
					.setHeader(ERROR_CODE, code.getBytes(StandardCharsets.UTF_8))
					.setHeader(ERROR_DESCRIPTION, String.valueOf(cause.getMessage()).getBytes(StandardCharsets.UTF_8))
					.build();
			};
		}

	}

	/**
	 * A ReplyingKafkaTemplate that counts the replies it cannot match: with
	 * pinned reply partitions, a reply that reaches the other replica's
	 * partition arrives here as "late".
	 */
	static final class CountingTemplate extends ReplyingKafkaTemplate<String, String, String> {

		final AtomicInteger unmatched = new AtomicInteger();

		final Integer partition;

		CountingTemplate(ProducerFactory<String, String> pf, KafkaMessageListenerContainer<String, String> c,
				Integer partition) {
			super(pf, c);
			this.partition = partition;
		}

		@Override
		protected void logLateArrival(ConsumerRecord<String, String> record, Object correlationId) {
			this.unmatched.incrementAndGet();
		}

	}

	/** The replyErrorChecker a Spring caller of a syncbridge Responder needs. */
	static Exception syncbridgeError(ConsumerRecord<?, ?> record) {
		Header code = record.headers().lastHeader(ERROR_CODE);
		if (code == null) {
			return null;
		}
		Header desc = record.headers().lastHeader(ERROR_DESCRIPTION);
		return new RemoteException(new String(code.value(), StandardCharsets.UTF_8),
				desc == null ? "" : new String(desc.value(), StandardCharsets.UTF_8), record.partition());
	}

	static CountingTemplate template(ConsumerFactory<String, String> cf, ProducerFactory<String, String> pf,
			String replyTopic, Integer partition) {
		ContainerProperties props = partition == null ? new ContainerProperties(replyTopic)
				: new ContainerProperties(new TopicPartitionOffset(replyTopic, partition));
		props.setGroupId("interop-spring-caller-" + UUID.randomUUID());
		// An assigned (pinned) container says it is ready after its first
		// poll, which lasts this long when no reply is there yet.
		props.setPollTimeout(500);
		KafkaMessageListenerContainer<String, String> container = new KafkaMessageListenerContainer<>(cf, props);
		CountingTemplate t = new CountingTemplate(pf, container, partition);
		t.setSharedReplyTopic(true);
		t.setReplyErrorChecker(SpringPeer::syncbridgeError);
		t.setDefaultReplyTimeout(Duration.ofSeconds(30));
		t.start();
		return t;
	}

	static void awaitAssignment(CountingTemplate t) throws InterruptedException {
		if (!t.waitForAssignment(Duration.ofSeconds(60))) {
			throw new IllegalStateException("reply container got no partitions in 60 s");
		}
	}

	/**
	 * Sends n requests (every other one failing) to a syncbridge Responder
	 * from two ReplyingKafkaTemplates (replicas) sharing a reply topic, and
	 * counts the outcomes. Mode "default": each replica reads the whole reply
	 * topic in a consumer group of its own; "pinned": each is assigned one
	 * partition (1 and 2), which it names in kafka_replyPartition.
	 */
	@SuppressWarnings("unchecked")
	static String call(ConsumerFactory<?, ?> cf0, ProducerFactory<?, ?> pf0, String mode, int n) throws Exception {
		ConsumerFactory<String, String> cf = (ConsumerFactory<String, String>) cf0;
		ProducerFactory<String, String> pf = (ProducerFactory<String, String>) pf0;
		boolean pinned = mode.equals("pinned");
		String replyTopic = prefix + ".spring.replies." + mode;
		long t0 = System.nanoTime();
		List<CountingTemplate> replicas = new ArrayList<>();
		replicas.add(template(cf, pf, replyTopic, pinned ? 1 : null));
		replicas.add(template(cf, pf, replyTopic, pinned ? 2 : null));
		for (CountingTemplate t : replicas) {
			awaitAssignment(t);
		}
		System.err.printf("spring %s: replicas ready in %d ms%n", mode, (System.nanoTime() - t0) / 1000000);
		AtomicInteger correct = new AtomicInteger();
		AtomicInteger misrouted = new AtomicInteger();
		AtomicInteger errorsAsErrors = new AtomicInteger();
		AtomicInteger lost = new AtomicInteger();
		AtomicInteger wrong = new AtomicInteger();
		Semaphore window = new Semaphore(64);
		CountDownLatch done = new CountDownLatch(n);
		String nonce = UUID.randomUUID().toString().substring(0, 8);
		int errorsSent = 0;
		for (int i = 0; i < n; i++) {
			boolean fail = i % 2 == 1;
			if (fail) {
				errorsSent++;
			}
			String payload = (fail ? "fail-" : "ok-") + "spring-" + mode + "-" + i + "-" + nonce;
			CountingTemplate t = replicas.get((i / 2) % 2); // each replica sends successes and errors
			window.acquire();
			ProducerRecord<String, String> rec = new ProducerRecord<>(prefix + ".gospring.requests", "k" + i, payload);
			t.sendAndReceive(rec).whenComplete((reply, ex) -> {
				try {
					if (ex == null) {
						String v = reply.value() == null ? "" : reply.value();
						boolean echo = v.equals("echo:" + payload);
						if (echo && t.partition != null && reply.partition() != t.partition) {
							misrouted.incrementAndGet(); // on a partition the request did not name
						}
						else if (!echo && v.startsWith("echo:")) {
							misrouted.incrementAndGet(); // another request's reply
						}
						else if (!echo || fail) {
							wrong.incrementAndGet(); // an error that arrived as a success (empty or not)
						}
						else {
							correct.incrementAndGet();
						}
						return;
					}
					Throwable cause = ex instanceof ExecutionException && ex.getCause() != null ? ex.getCause() : ex;
					if (cause instanceof RemoteException re) {
						if (!re.description.equals("no: " + payload)) {
							misrouted.incrementAndGet();
						}
						else if (fail && re.code.equals("refused")
								&& (t.partition == null || re.partition == t.partition)) {
							correct.incrementAndGet();
							errorsAsErrors.incrementAndGet();
						}
						else {
							wrong.incrementAndGet();
						}
						return;
					}
					lost.incrementAndGet(); // timed out, or failed to send
					System.err.println("spring " + mode + " " + payload + ": " + cause);
				}
				finally {
					window.release();
					done.countDown();
				}
			});
		}
		if (!done.await(120, TimeUnit.SECONDS)) {
			throw new IllegalStateException("requests did not end in 120 s");
		}
		System.err.printf("spring %s: requests done in %d ms%n", mode, (System.nanoTime() - t0) / 1000000);
		int unmatched = 0;
		for (CountingTemplate t : replicas) {
			if (pinned) {
				unmatched += t.unmatched.get(); // reached the other replica's partition
			}
			t.stop();
			t.destroy(); // its scheduler's thread
		}
		misrouted.addAndGet(unmatched);
		System.err.printf("spring %s: replicas stopped in %d ms%n", mode, (System.nanoTime() - t0) / 1000000);
		return String.format(
				"{\"peer\":\"spring\",\"direction\":\"spring->go\",\"mode\":\"%s\",\"sent\":%d,\"correct\":%d,"
						+ "\"misrouted\":%d,\"errorsSent\":%d,\"errorsAsErrors\":%d,\"lost\":%d,\"wrong\":%d}",
				mode, n, correct.get(), misrouted.get(), errorsSent, errorsAsErrors.get(), lost.get(), wrong.get());
	}

	private SpringPeer() {
	}

}
