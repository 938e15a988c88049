import Foundation

/// Where the time of training steps goes, by kind of work (`clicktrain bench --breakdown`).
/// Layers and the training step report their work while a profile is `current`; otherwise
/// (always, outside the benchmark) reporting costs one nil check.
package final class WorkProfile: @unchecked Sendable {
    package enum Kind: String, CaseIterable, Codable, Sendable {
        case convForward = "conv_forward", convBackward = "conv_backward", batchNorm = "batch_norm"
        /// ReLU, the residual add, flattening.
        case elementwise
        case pooling, linear, loss, optimizer
        /// The training methods' hooks (pruning bookkeeping, gradient exchange).
        case methods
    }

    /// The profile being collected, if any: bound with `WorkProfile.$current.withValue` around
    /// the steps to measure, so it is seen only there (a task-local value, also in code
    /// outside any task), never by other training running at the same time.
    @TaskLocal package static var current: WorkProfile?

    package private(set) var seconds: [Kind: Double] = [:]

    package init() {}

    /// A start time for `stop`, or 0 when nothing is collected.
    @inline(__always) package static func start() -> UInt64 {
        current == nil ? 0 : DispatchTime.now().uptimeNanoseconds
    }

    /// Adds the time since `start()` to `kind`.
    @inline(__always) package static func stop(_ kind: Kind, since t0: UInt64) {
        guard let p = current else { return }
        p.seconds[kind, default: 0] += Double(DispatchTime.now().uptimeNanoseconds - t0) * 1e-9
    }

    package func reset() { seconds = [:] }
}
