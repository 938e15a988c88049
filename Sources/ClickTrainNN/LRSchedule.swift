import Foundation

/// Learning rate as a function of progress, evaluated per iteration.
public enum LRSchedule: Sendable, Equatable, Codable {
    /// Multiply by `gamma` at each milestone epoch.
    case step(milestones: [Int], gamma: Float)
    /// Cosine from the base rate to 0 over the run.
    case cosine
    case constant

    /// - Parameters: epoch is fractional (iteration / iterations per epoch); warmup epochs
    ///   ramp linearly from base/10... to base before the schedule takes over.
    public func rate(base: Float, epoch: Double, totalEpochs: Int, warmupEpochs: Double = 0) -> Float {
        if warmupEpochs > 0 && epoch < warmupEpochs {
            return base * Float((epoch + 1.0 / 16) / (warmupEpochs + 1.0 / 16))
        }
        switch self {
        case .constant: return base
        case .step(let milestones, let gamma):
            let passed = milestones.filter { Double($0) <= epoch }.count
            return base * Float(pow(Double(gamma), Double(passed)))
        case .cosine:
            let t = min(max(epoch - warmupEpochs, 0) / max(Double(totalEpochs) - warmupEpochs, 1e-9), 1)
            return base * Float(0.5 * (1 + cos(Double.pi * t)))
        }
    }
}
