/*
 * Extensions answered only by the Swarm HBase development server
 * (swarm.hbase_dev), a test and development stand-in for HBase.
 *
 * HBase's Thrift1 API (Hbase.thrift) cannot create a pre-split table. This
 * service adds that one call for development use. A real HBase Thrift server
 * does not know the method and answers with a TApplicationException of type
 * UNKNOWN_METHOD, leaving the connection usable.
 */

namespace py swarm_hbase_dev

exception IOError {
  1:string message
}

exception IllegalArgument {
  1:string message
}

exception AlreadyExists {
  1:string message
}

service HbaseDev {
  /**
   * Create a table with the given column families (names, with or without
   * the trailing ':'), pre-split at the given non-empty, distinct row keys.
   */
  void createTableWithSplits(
    1:binary tableName,
    2:list<binary> families,
    3:list<binary> splitKeys
  ) throws (1:IOError io, 2:IllegalArgument ia, 3:AlreadyExists exist)
}
