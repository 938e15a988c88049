import CBLAS
import CDNNL
import Dispatch
import Foundation

/// One setting for every thread pool the engine uses: OpenBLAS, oneDNN's OpenMP
/// runtime and our own parallel loops.
public enum Threads {
    nonisolated(unsafe) private static var _count = ProcessInfo.processInfo.activeProcessorCount

    /// Number of threads kernels use (default: all cores).
    public static var count: Int { _count }

    /// The cores this process may run on (its CPU affinity; a launcher such as `mpirun`
    /// may bind it to fewer than the machine has).
    public static var allowedCores: Int {
        #if os(Linux)
        // `Cpus_allowed` is the affinity mask in hex (sched_getaffinity needs _GNU_SOURCE).
        if let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
           let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed:") }) {
            let bits = line.dropFirst("Cpus_allowed:".count).compactMap { $0.hexDigitValue }
                .reduce(0) { $0 + $1.nonzeroBitCount }
            if bits > 0 { return bits }
        }
        return ProcessInfo.processInfo.activeProcessorCount
        #else
        return ProcessInfo.processInfo.activeProcessorCount
        #endif
    }

    /// Sets the thread count for OpenBLAS, oneDNN (OpenMP) and `parallelFor`.
    public static func set(_ n: Int) {
        precondition(n >= 1, "Threads.set: need at least 1 thread, got \(n)")
        _count = n
        openblas_set_num_threads(Int32(n))
        omp_set_num_threads(Int32(n))
    }

    /// Runs `body(chunk)` for `chunk` in 0..<chunks on up to `count` threads. The split
    /// of work into chunks is the caller's, so results do not depend on scheduling.
    @inlinable
    public static func parallelFor(_ chunks: Int, _ body: (Int) -> Void) {
        if chunks <= 0 { return }
        if chunks == 1 || count == 1 {
            for i in 0..<chunks { body(i) }
        } else {
            withoutActuallyEscaping(body) { b in
                let box = UncheckedSendable(b)
                DispatchQueue.concurrentPerform(iterations: chunks) { box.value($0) }
            }
        }
    }

    /// Splits 0..<n into at most `count` contiguous ranges (each at least `minPerChunk`
    /// long) and runs them in parallel. Deterministic given `count`.
    @inlinable
    public static func parallelRanges(_ n: Int, minPerChunk: Int = 1, _ body: (Range<Int>) -> Void) {
        if n <= 0 { return }
        let chunks = max(1, min(count, n / max(minPerChunk, 1)))
        parallelFor(chunks) { c in
            let lo = n * c / chunks, hi = n * (c + 1) / chunks
            if lo < hi { body(lo..<hi) }
        }
    }
}

/// Carries a value into a `@Sendable` closure when the caller guarantees the
/// concurrent uses touch disjoint memory (our parallel loops split their output).
public struct UncheckedSendable<T>: @unchecked Sendable {
    public let value: T
    @inlinable public init(_ v: T) { value = v }
}

extension Threads {
    /// Sums `body(range)` over a fixed split of 0..<n (deterministic given `count`); nil
    /// when n is 0.
    public static func parallelSum(_ n: Int, minPerChunk: Int = 1 << 15, _ body: (Range<Int>) -> Double) -> Double? {
        if n <= 0 { return nil }
        let chunks = max(1, min(count, n / max(minPerChunk, 1)))
        var partial = [Double](repeating: 0, count: chunks)
        partial.withUnsafeMutableBufferPointer { p in
            let out = p.baseAddress!
            parallelFor(chunks) { c in
                let lo = n * c / chunks, hi = n * (c + 1) / chunks
                out[c] = body(lo..<hi)
            }
        }
        return partial.reduce(0, +)
    }
}
