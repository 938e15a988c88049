import CMPI
import ClickTrainCore
import Foundation

/// The ranks of an Open MPI job (`mpirun -np N clicktrain …`) as a `ProcessGroup`.
///
/// MPI is initialised only when the process was started by `mpirun`, so a run without it
/// never touches MPI. Collectives are called from the thread that initialised MPI (the
/// training loop's), which is what `MPI_THREAD_FUNNELED` promises. Any MPI error ends the
/// whole job (MPI's default handler), and `mpirun` ends every rank when one dies.
public final class MPIProcessGroup: ProcessGroup {
    public let rank: Int
    public let size: Int
    public let localSize: Int
    public private(set) var allreduceBytes = 0
    public private(set) var waitSeconds = 0.0
    private let comm = ct_mpi_comm_world()
    private var requests: [MPI_Request?] = []

    /// Whether this process was started by Open MPI's launcher.
    public static var launchedByMPI: Bool { ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_SIZE"] != nil }

    /// Joins the job this process belongs to, or nil when it was not started by `mpirun`.
    public static func joinIfLaunched() throws -> MPIProcessGroup? {
        guard launchedByMPI else { return nil }
        var provided: Int32 = 0
        guard MPI_Init_thread(nil, nil, ct_mpi_thread_funneled(), &provided) == ct_mpi_success() else {
            throw MPIError(detail: "MPI_Init_thread failed")
        }
        return MPIProcessGroup()
    }

    private init() {
        var r: Int32 = 0, s: Int32 = 0
        MPI_Comm_rank(comm, &r)
        MPI_Comm_size(comm, &s)
        rank = Int(r)
        size = Int(s)
        let local = Int(ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "") ?? 0
        localSize = local > 0 ? local : 1
    }

    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Float>) {
        guard !values.isEmpty else { return }
        allreduceBytes += values.count * MemoryLayout<Float>.size
        timed { _ = MPI_Allreduce(UnsafeRawPointer(ct_mpi_in_place()), values.baseAddress, Int32(values.count),
                                  ct_mpi_float(), ct_mpi_sum(), comm) }
    }

    public func allreduceSum(_ values: UnsafeMutableBufferPointer<Double>) {
        guard !values.isEmpty else { return }
        allreduceBytes += values.count * MemoryLayout<Double>.size
        timed { _ = MPI_Allreduce(UnsafeRawPointer(ct_mpi_in_place()), values.baseAddress, Int32(values.count),
                                  ct_mpi_double(), ct_mpi_sum(), comm) }
    }

    public func startAllreduceSum(_ values: UnsafeMutableBufferPointer<Float>) {
        guard !values.isEmpty else { return }
        allreduceBytes += values.count * MemoryLayout<Float>.size
        var request: MPI_Request?
        MPI_Iallreduce(UnsafeRawPointer(ct_mpi_in_place()), values.baseAddress, Int32(values.count), ct_mpi_float(),
                       ct_mpi_sum(), comm, &request)
        requests.append(request)
    }

    public func progress() {
        guard !requests.isEmpty else { return }
        var done: Int32 = 0
        MPI_Testall(Int32(requests.count), &requests, &done, ct_mpi_statuses_ignore())
        if done != 0 { requests = [] }
    }

    public func waitAll() {
        guard !requests.isEmpty else { return }
        timed { _ = MPI_Waitall(Int32(requests.count), &requests, ct_mpi_statuses_ignore()) }
        requests = []
    }

    public func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) {
        guard var p = bytes.baseAddress else { return }
        var left = bytes.count
        timed {
            while left > 0 {  // counts are 32-bit
                let n = min(left, 1 << 30)
                MPI_Bcast(p, Int32(n), ct_mpi_byte(), Int32(root), comm)
                p += n
                left -= n
            }
        }
    }

    public func allgather(_ value: UInt64) -> [UInt64] {
        var mine = value
        var all = [UInt64](repeating: 0, count: size)
        timed { _ = MPI_Allgather(&mine, 1, ct_mpi_uint64(), &all, 1, ct_mpi_uint64(), comm) }
        return all
    }

    /// Ends every rank of the job with `code` (after this rank printed why).
    public func abort(code: Int32) -> Never {
        MPI_Abort(comm, code)
        exit(code)
    }

    /// Leaves the job normally (every rank calls it once, at the end).
    public func finish() {
        MPI_Finalize()
    }

    private func timed(_ body: () -> Void) {
        let t0 = DispatchTime.now().uptimeNanoseconds
        body()
        waitSeconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    }
}

public struct MPIError: Error, CustomStringConvertible {
    public let detail: String
    public var description: String { detail }
}
