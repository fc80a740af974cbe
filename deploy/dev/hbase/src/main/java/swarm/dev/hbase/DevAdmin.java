package swarm.dev.hbase;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.EnumSet;
import java.util.List;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.regex.Pattern;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hbase.ClusterMetrics;
import org.apache.hadoop.hbase.HBaseConfiguration;
import org.apache.hadoop.hbase.HRegionLocation;
import org.apache.hadoop.hbase.TableName;
import org.apache.hadoop.hbase.TableNotFoundException;
import org.apache.hadoop.hbase.client.Admin;
import org.apache.hadoop.hbase.client.ColumnFamilyDescriptorBuilder;
import org.apache.hadoop.hbase.client.CompactionState;
import org.apache.hadoop.hbase.client.Connection;
import org.apache.hadoop.hbase.client.ConnectionFactory;
import org.apache.hadoop.hbase.client.RegionInfo;
import org.apache.hadoop.hbase.client.RegionLocator;
import org.apache.hadoop.hbase.client.TableDescriptorBuilder;
import org.apache.hadoop.hbase.master.RegionState;
import org.apache.hadoop.hbase.util.Bytes;

/**
 * What the development HBase's Thrift1 API cannot do, for tests and local work: pre-split a
 * table, split a region, list regions, wait for them, drop tables by prefix, shut HBase down.
 *
 * <p>Row keys are given and printed as HBase's shell-style binary strings: printable bytes as
 * they are, any other byte as {@code \xNN} (so a comma inside a split key is {@code \x2C}).
 * Reads the connection settings from the hbase-site.xml on the classpath. Exit codes: 0 done,
 * 1 failed, 2 bad usage, 3 table not found.
 */
public final class DevAdmin {
  private static final String USAGE = String.join("\n",
      "usage: DevAdmin COMMAND [ARGS]",
      "  ping                                         answer once HBase serves requests",
      "  create-presplit TABLE FAMILY... [--splits K1,K2,...] [--max-versions N]",
      "                                               create pre-split (an existing table is left as it is)",
      "  split TABLE ROW [--timeout SECONDS]          split the region holding ROW at ROW, wait for the daughters",
      "  regions TABLE                                print START<TAB>END<TAB>SERVER per region, in key order",
      "  wait-regions TABLE [--count N] [--timeout SECONDS]",
      "                                               wait until every region (N of them) is online",
      "  flush TABLE                                  flush the table's memstores to files",
      "  drop TABLE...                                disable and delete tables (missing ones are skipped)",
      "  drop-prefix PREFIX                           disable and delete every table whose name starts with PREFIX",
      "  shutdown                                     stop HBase cleanly (regions flushed and closed)");

  private DevAdmin() {}

  public static void main(String[] args) {
    System.exit(run(args));
  }

  static int run(String[] args) {
    if (args.length == 0 || args[0].equals("-h") || args[0].equals("--help")) {
      System.err.println(USAGE);
      return args.length == 0 ? 2 : 0;
    }
    Configuration conf = HBaseConfiguration.create();
    if (args[0].equals("ping")) {
      // Fail fast rather than retry for minutes: the caller polls.
      conf.setInt("hbase.client.retries.number", 1);
      conf.setInt("hbase.rpc.timeout", 5000);
      conf.setInt("hbase.client.operation.timeout", 10000);
    }
    try (Connection conn = ConnectionFactory.createConnection(conf); Admin admin = conn.getAdmin()) {
      return dispatch(conn, admin, args[0], Arrays.copyOfRange(args, 1, args.length));
    } catch (UsageError e) {
      System.err.println("DevAdmin: " + e.getMessage() + "\n" + USAGE);
      return 2;
    } catch (TableNotFoundException e) {
      System.err.println("DevAdmin: table not found: " + e.getMessage());
      return 3;
    } catch (Exception e) {
      System.err.println("DevAdmin: " + args[0] + " failed: " + e);
      return 1;
    }
  }

  private static int dispatch(Connection conn, Admin admin, String command, String[] rest) throws Exception {
    Args a = new Args(rest);
    switch (command) {
      case "ping":
        a.done();
        System.out.println("ok: " + admin.listTableNames().length + " table(s), "
            + admin.getClusterMetrics(EnumSet.of(ClusterMetrics.Option.LIVE_SERVERS)).getLiveServerMetrics().size()
            + " region server(s)");
        return 0;
      case "create-presplit":
        return createPresplit(conn, admin, a);
      case "split":
        return split(conn, admin, a);
      case "regions": {
        TableName table = a.table();
        a.done();
        printRegions(conn, admin, table);
        return 0;
      }
      case "wait-regions": {
        TableName table = a.table();
        int count = a.intOption("--count", -1);
        long timeout = a.intOption("--timeout", 120);
        a.done();
        waitRegions(conn, admin, table, count, timeout);
        printRegions(conn, admin, table);
        return 0;
      }
      case "flush": {
        TableName table = a.table();
        a.done();
        admin.flush(table);
        return 0;
      }
      case "drop": {
        List<TableName> tables = new ArrayList<>();
        while (a.more()) {
          tables.add(a.table());
        }
        if (tables.isEmpty()) {
          throw new UsageError("drop needs at least one table");
        }
        for (TableName t : tables) {
          drop(admin, t);
        }
        return 0;
      }
      case "drop-prefix": {
        String prefix = a.word("PREFIX");
        a.done();
        if (prefix.isEmpty()) {
          throw new UsageError("an empty prefix would drop every table");
        }
        for (TableName t : admin.listTableNames(Pattern.compile(Pattern.quote(prefix) + ".*"))) {
          drop(admin, t);
        }
        return 0;
      }
      case "shutdown":
        a.done();
        admin.shutdown();
        return 0;
      default:
        throw new UsageError("unknown command " + command);
    }
  }

  private static int createPresplit(Connection conn, Admin admin, Args a) throws Exception {
    TableName table = a.table();
    String splits = a.option("--splits", "");
    int maxVersions = a.intOption("--max-versions", 1);
    List<String> families = new ArrayList<>();
    while (a.more()) {
      families.add(a.word("FAMILY"));
    }
    a.done();
    if (families.isEmpty()) {
      throw new UsageError("create-presplit needs at least one column family");
    }
    if (admin.tableExists(table)) {
      System.err.println("DevAdmin: " + table + " exists: left as it is");
      printRegions(conn, admin, table);
      return 0;
    }
    TableDescriptorBuilder desc = TableDescriptorBuilder.newBuilder(table);
    for (String family : families) {
      String name = family.endsWith(":") ? family.substring(0, family.length() - 1) : family;
      desc.setColumnFamily(ColumnFamilyDescriptorBuilder.newBuilder(Bytes.toBytes(name))
          .setMaxVersions(maxVersions).build());
    }
    TreeSet<byte[]> keys = new TreeSet<>(Bytes.BYTES_COMPARATOR);
    for (String key : splits.split(",")) {
      if (!key.isEmpty()) {
        keys.add(Bytes.toBytesBinary(key));
      }
    }
    if (keys.isEmpty()) {
      admin.createTable(desc.build());
    } else {
      admin.createTable(desc.build(), keys.toArray(new byte[0][]));
    }
    waitRegions(conn, admin, table, keys.size() + 1, 120);
    printRegions(conn, admin, table);
    return 0;
  }

  private static int split(Connection conn, Admin admin, Args a) throws Exception {
    TableName table = a.table();
    byte[] row = Bytes.toBytesBinary(a.word("ROW"));
    long timeout = a.intOption("--timeout", 120);
    a.done();
    if (row.length == 0) {
      throw new UsageError("cannot split at the empty row");
    }
    RegionInfo region;
    try (RegionLocator locator = conn.getRegionLocator(table)) {
      region = locator.getRegionLocation(row, true).getRegion();
    }
    if (Bytes.equals(region.getStartKey(), row)) {
      System.err.println("DevAdmin: " + Bytes.toStringBinary(row) + " already starts a region");
    } else {
      int before = admin.getRegions(table).size();
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeout);
      while (true) {
        try {
          admin.splitRegionAsync(region.getRegionName(), row).get(timeout, TimeUnit.SECONDS);
          break;
        } catch (ExecutionException | IOException e) {
          // A daughter of a recent split still refers to its parent's files until it is compacted.
          if (!String.valueOf(e.getMessage()).contains("NOT splittable") || System.nanoTime() > deadline) {
            throw e;
          }
          admin.majorCompactRegion(region.getRegionName());
          Thread.sleep(500);
          while (admin.getCompactionStateForRegion(region.getRegionName()) != CompactionState.NONE) {
            Thread.sleep(200);
          }
        }
      }
      waitRegions(conn, admin, table, before + 1, timeout);
    }
    printRegions(conn, admin, table);
    return 0;
  }

  /** Waits until the table has {@code count} regions (any number if negative), each open on a server. */
  private static void waitRegions(Connection conn, Admin admin, TableName table, int count, long timeoutSeconds)
      throws IOException, InterruptedException {
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(timeoutSeconds);
    String last = "";
    while (true) {
      if (!admin.tableExists(table)) {
        throw new TableNotFoundException(table);
      }
      List<RegionInfo> regions = admin.getRegions(table);
      boolean counted = count < 0 || regions.size() == count;
      boolean inTransition = false;
      for (RegionState state : admin.getClusterMetrics(EnumSet.of(ClusterMetrics.Option.REGIONS_IN_TRANSITION))
          .getRegionStatesInTransition()) {
        inTransition |= state.getRegion().getTable().equals(table);
      }
      if (counted && !inTransition && admin.isTableAvailable(table)) {
        return;
      }
      last = regions.size() + " region(s)" + (inTransition ? ", some in transition" : "");
      if (System.nanoTime() > deadline) {
        throw new IOException("gave up waiting for the regions of " + table + " after " + timeoutSeconds
            + " s: " + last);
      }
      Thread.sleep(200);
    }
  }

  private static void printRegions(Connection conn, Admin admin, TableName table) throws IOException {
    if (!admin.tableExists(table)) {
      throw new TableNotFoundException(table);
    }
    try (RegionLocator locator = conn.getRegionLocator(table)) {
      for (HRegionLocation location : locator.getAllRegionLocations()) {
        RegionInfo region = location.getRegion();
        System.out.println(Bytes.toStringBinary(region.getStartKey()) + "\t"
            + Bytes.toStringBinary(region.getEndKey()) + "\t"
            + (location.getServerName() == null ? "-" : location.getServerName()));
      }
    }
  }

  private static void drop(Admin admin, TableName table) throws IOException {
    if (!admin.tableExists(table)) {
      return;
    }
    if (admin.isTableEnabled(table)) {
      admin.disableTable(table);
    }
    admin.deleteTable(table);
    System.err.println("DevAdmin: dropped " + table);
  }

  static final class UsageError extends Exception {
    UsageError(String message) {
      super(message);
    }
  }

  /** Positional words and {@code --name value} options, in any order. */
  static final class Args {
    private final List<String> words = new ArrayList<>();
    private final List<String[]> options = new ArrayList<>();

    Args(String[] args) throws UsageError {
      for (int i = 0; i < args.length; i++) {
        if (args[i].startsWith("--")) {
          if (i + 1 >= args.length) {
            throw new UsageError(args[i] + " needs a value");
          }
          options.add(new String[] {args[i], args[++i]});
        } else {
          words.add(args[i]);
        }
      }
    }

    boolean more() {
      return !words.isEmpty();
    }

    String word(String what) throws UsageError {
      if (words.isEmpty()) {
        throw new UsageError("missing " + what);
      }
      return words.remove(0);
    }

    TableName table() throws UsageError {
      return TableName.valueOf(word("TABLE"));
    }

    String option(String name, String fallback) {
      for (int i = 0; i < options.size(); i++) {
        if (options.get(i)[0].equals(name)) {
          return options.remove(i)[1];
        }
      }
      return fallback;
    }

    int intOption(String name, int fallback) throws UsageError {
      String value = option(name, null);
      if (value == null) {
        return fallback;
      }
      try {
        return Integer.parseInt(value);
      } catch (NumberFormatException e) {
        throw new UsageError(name + " must be a whole number, got " + value);
      }
    }

    void done() throws UsageError {
      if (!words.isEmpty()) {
        throw new UsageError("unexpected " + words.get(0));
      }
      if (!options.isEmpty()) {
        throw new UsageError("unknown option " + options.get(0)[0]);
      }
    }
  }
}
