import Foundation

/// The processes that train one model together (data parallelism): every rank holds the
/// same model and trains on its own shard of each batch. `ClickTrainDistributed` provides
/// one over MPI; code that trains in one process never sees one.
///
/// Collective calls (`allreduceSum`, `startAllreduceSum`, `broadcast`, `allgather`) must
/// be made by every rank in the same order.
public protocol ProcessGroup: AnyObject {
    /// This process's index, 0..<size; rank 0 writes the run's files.
    var rank: Int { get }
    var size: Int { get }
    /// Ranks on this machine (they share its cores).
    var localSize: Int { get }
    /// Sums `values` element-wise over the ranks, in place; every rank gets the same result.
    func allreduceSum(_ values: UnsafeMutableBufferPointer<Float>)
    func allreduceSum(_ values: UnsafeMutableBufferPointer<Double>)
    /// Starts summing `values` in place without waiting; the buffer must stay untouched
    /// until `waitAll()` returns.
    func startAllreduceSum(_ values: UnsafeMutableBufferPointer<Float>)
    /// Lets started operations advance (MPI moves non-blocking collectives only inside its calls).
    func progress()
    /// Waits for every started operation.
    func waitAll()
    /// Replaces `bytes` on every rank with rank `root`'s.
    func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int)
    /// Every rank's `value`, indexed by rank.
    func allgather(_ value: UInt64) -> [UInt64]
    /// Bytes handed to allreduce calls, and seconds spent blocked in communication, since
    /// the group was made.
    var allreduceBytes: Int { get }
    var waitSeconds: Double { get }
}

extension ProcessGroup {
    /// Rank 0's values of `tensor` on every rank.
    public func broadcast(_ tensor: Tensor, root: Int = 0) {
        broadcast(UnsafeMutableRawBufferPointer(start: tensor.data, count: tensor.count * MemoryLayout<Float>.size),
                  root: root)
    }

    /// Rank `root`'s `text` on every rank.
    public func broadcast(_ text: String, root: Int = 0) -> String {
        var length = UInt64(text.utf8.count)
        withUnsafeMutableBytes(of: &length) { broadcast($0, root: root) }
        var bytes = rank == root ? [UInt8](text.utf8) : [UInt8](repeating: 0, count: Int(length))
        bytes.withUnsafeMutableBytes { broadcast($0, root: root) }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The sums of `values` over the ranks.
    public func sum(_ values: [Double]) -> [Double] {
        var v = values
        v.withUnsafeMutableBufferPointer { allreduceSum($0) }
        return v
    }
}
