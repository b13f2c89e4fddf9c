// Readiness probe used by scripts/kafka. Compiled on first use against the
// cached kafka-clients jar; not part of the Go build.
//
//   java -cp 'probe:libs/*' KafkaProbe BOOTSTRAP TIMEOUT_SECONDS [PID]
//
// Exits 0 once the broker answers a DescribeCluster (i.e. it is registered and
// unfenced in the KRaft metadata) and every existing partition has a leader.
// Exits 1 on timeout, 2 as soon as PID (the broker's JVM) is no longer alive.

import java.util.Collection;
import java.util.Map;
import java.util.Properties;
import java.util.Set;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.DescribeTopicsOptions;
import org.apache.kafka.clients.admin.ListTopicsOptions;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartitionInfo;

public class KafkaProbe {
    public static void main(String[] args) throws Exception {
        if (args.length < 2) {
            System.err.println("usage: KafkaProbe BOOTSTRAP TIMEOUT_SECONDS [PID]");
            System.exit(64);
        }
        String bootstrap = args[0];
        long deadline = System.currentTimeMillis() + Long.parseLong(args[1]) * 1000L;
        long pid = args.length > 2 ? Long.parseLong(args[2]) : -1;

        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("client.id", "syncbridge-kafka-probe");
        p.put("request.timeout.ms", "2000");
        p.put("default.api.timeout.ms", "3000");
        p.put("socket.connection.setup.timeout.ms", "1000");
        p.put("socket.connection.setup.timeout.max.ms", "2000");
        p.put("reconnect.backoff.ms", "100");
        p.put("reconnect.backoff.max.ms", "300");
        p.put("retry.backoff.ms", "100");
        p.put("retry.backoff.max.ms", "300");

        String last = "no attempt";
        try (Admin admin = Admin.create(p)) {
            while (System.currentTimeMillis() < deadline) {
                if (pid > 0 && !ProcessHandle.of(pid).map(ProcessHandle::isAlive).orElse(false)) {
                    System.err.println("probe: broker process " + pid + " exited");
                    System.exit(2);
                }
                try {
                    DescribeClusterResult r = admin.describeCluster(new DescribeClusterOptions().timeoutMs(2000));
                    Collection<Node> nodes = r.nodes().get();
                    String clusterId = r.clusterId().get();
                    if (nodes.isEmpty()) {
                        last = "cluster has no brokers yet";
                    } else {
                        // After a restart, wait until every existing partition
                        // has a leader again, so produce works at once.
                        Set<String> names = admin.listTopics(new ListTopicsOptions().listInternal(true)
                                .timeoutMs(2000)).names().get();
                        int partitions = 0;
                        String leaderless = null;
                        if (!names.isEmpty()) {
                            Map<String, TopicDescription> topics = admin.describeTopics(names,
                                    new DescribeTopicsOptions().timeoutMs(2000)).allTopicNames().get();
                            for (TopicDescription t : topics.values()) {
                                for (TopicPartitionInfo tp : t.partitions()) {
                                    partitions++;
                                    if (tp.leader() == null || tp.leader().isEmpty()) {
                                        leaderless = t.name() + "-" + tp.partition();
                                    }
                                }
                            }
                        }
                        if (leaderless == null) {
                            System.out.println("probe: ok cluster=" + clusterId + " brokers=" + nodes.size()
                                    + " topics=" + names.size() + " partitions=" + partitions);
                            return;
                        }
                        last = "partition " + leaderless + " has no leader yet";
                    }
                } catch (Exception e) {
                    Throwable c = e.getCause() != null ? e.getCause() : e;
                    last = c.getClass().getSimpleName() + ": " + c.getMessage();
                }
                Thread.sleep(150);
            }
        }
        System.err.println("probe: broker at " + bootstrap + " not ready: " + last);
        System.exit(1);
    }
}
