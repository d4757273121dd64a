package io.twinengine.bench.kstreams;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;

/**
 * Topic chores for benchmark runs, through the Admin API:
 *
 * <pre>
 *   Topics create BOOTSTRAP PARTITIONS TOPIC...   create (replication 1), wait until they have leaders
 *   Topics delete BOOTSTRAP TOPIC...              delete (missing ones are ignored)
 *   Topics count  BOOTSTRAP TOPIC...              print the number of records they hold (end - start offsets)
 * </pre>
 */
public final class Topics {
  private Topics() {}

  public static void main(String[] a) throws Exception {
    if (a.length < 3) {
      System.err.println("usage: Topics create BOOTSTRAP PARTITIONS TOPIC... | delete BOOTSTRAP TOPIC... | count BOOTSTRAP TOPIC...");
      System.exit(2);
    }
    String bootstrap = a[1];
    switch (a[0]) {
      case "create":
        {
          int parts = Integer.parseInt(a[2]);
          List<String> names = List.of(a).subList(3, a.length);
          try (Admin admin = admin(bootstrap)) {
            List<NewTopic> nt = new ArrayList<>();
            for (String n : names) nt.add(new NewTopic(n, parts, (short) 1));
            admin.createTopics(nt).all().get(60, TimeUnit.SECONDS);
            waitForLeaders(admin, names, parts);
          }
          System.err.println("topics: created " + names + " with " + parts + " partitions");
          break;
        }
      case "delete":
        {
          List<String> names = List.of(a).subList(2, a.length);
          try (Admin admin = admin(bootstrap)) {
            List<String> have = new ArrayList<>(admin.listTopics().names().get(30, TimeUnit.SECONDS));
            have.retainAll(names);
            if (!have.isEmpty()) admin.deleteTopics(have).all().get(60, TimeUnit.SECONDS);
            System.err.println("topics: deleted " + have);
          }
          break;
        }
      case "count":
        System.out.println(countRecords(bootstrap, List.of(a).subList(2, a.length)));
        break;
      default:
        System.err.println("topics: unknown command " + a[0]);
        System.exit(2);
    }
  }

  static Admin admin(String bootstrap) {
    Properties p = new Properties();
    p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    return Admin.create(p);
  }

  private static void waitForLeaders(Admin admin, List<String> names, int parts) throws Exception {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
    while (true) {
      try {
        boolean ready = true;
        for (TopicDescription d : admin.describeTopics(names).allTopicNames().get(10, TimeUnit.SECONDS).values()) {
          if (d.partitions().size() != parts) ready = false;
          for (TopicPartitionInfo pi : d.partitions()) if (pi.leader() == null || pi.leader().id() < 0) ready = false;
        }
        if (ready) return;
      } catch (java.util.concurrent.ExecutionException e) {
        // not visible yet
      }
      if (System.nanoTime() > deadline) throw new IllegalStateException("topics have no leaders after 30 s: " + names);
      Thread.sleep(200);
    }
  }

  /** Records now held by the topics: sum over partitions of (latest - earliest offset). */
  static long countRecords(String bootstrap, List<String> topics) throws Exception {
    try (Admin admin = admin(bootstrap)) {
      Map<TopicPartition, OffsetSpec> earliest = new HashMap<>(), latest = new HashMap<>();
      for (TopicDescription d : admin.describeTopics(topics).allTopicNames().get(30, TimeUnit.SECONDS).values()) {
        for (TopicPartitionInfo pi : d.partitions()) {
          TopicPartition tp = new TopicPartition(d.name(), pi.partition());
          earliest.put(tp, OffsetSpec.earliest());
          latest.put(tp, OffsetSpec.latest());
        }
      }
      Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> e =
          admin.listOffsets(earliest).all().get(30, TimeUnit.SECONDS);
      Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> l =
          admin.listOffsets(latest).all().get(30, TimeUnit.SECONDS);
      long n = 0;
      for (TopicPartition tp : l.keySet()) n += l.get(tp).offset() - e.get(tp).offset();
      return n;
    }
  }
}
