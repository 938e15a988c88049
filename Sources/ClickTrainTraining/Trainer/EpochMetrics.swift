import ClickTrainCore
import Foundation

/// One line of `metrics.jsonl`.
public struct EpochMetrics: Codable, Equatable, Sendable {
    public var epoch: Int
    public var lr: Double
    public var train_loss: Double
    public var train_acc: Double
    public var test_loss: Double
    public var test_acc: Double
    public var images_per_s: Double
    /// The whole epoch: the methods' own work at its start and end (pattern choice, hard
    /// pruning, rebuilding), the steps and the evaluation.
    public var seconds: Double
    public var phase: String
    /// Time in `model.backward` over the epoch (pruning included), seconds.
    public var backward_seconds: Double?
    /// With activation-gradient pruning: mean zero fraction of the pruned gradient per
    /// layer over the epoch, and its mean over the conv layers.
    public var grad_sparsity: [String: Double]?
    public var grad_sparsity_conv_mean: Double?
    /// Dense conv weights over non-zero conv weights at the end of the epoch.
    public var conv_compression: Double?
    /// Inference FLOPs per image at the epoch's end (masks applied), and dense.
    public var inference_flops: Double?
    public var dense_inference_flops: Double?
    /// Training FLOPs of the epoch (forward + both gradients, all images) at the phase's
    /// sparsity, and what the dense model would have cost.
    public var train_flops: Double?
    public var dense_train_flops: Double?
    /// Data-parallel runs: the ranks, the bytes one rank handed to allreduce per step
    /// (counted at the communication calls), and the seconds it waited on communication.
    public var ranks: Int?
    public var allreduce_bytes_per_step: Int?
    public var comm_seconds: Double?

    public init(epoch: Int, lr: Double, train_loss: Double, train_acc: Double, test_loss: Double, test_acc: Double,
                images_per_s: Double, seconds: Double, phase: String, backward_seconds: Double? = nil) {
        self.epoch = epoch
        self.lr = lr
        self.train_loss = train_loss
        self.train_acc = train_acc
        self.test_loss = test_loss
        self.test_acc = test_acc
        self.images_per_s = images_per_s
        self.seconds = seconds
        self.phase = phase
        self.backward_seconds = backward_seconds
    }
}

/// Why a run stopped or could not resume: no checkpoint, a diverged loss, a checkpoint that
/// does not fit.
public enum TrainingError: Error, CustomStringConvertible {
    case nonFiniteLoss(epoch: Int, step: Int, loss: Float, runDir: String, lastGoodEpoch: Int)
    case noCheckpoint(runDir: String)
    case badCheckpoint(path: String, detail: String)
    /// Saving the epoch's files failed; the previous checkpoint is untouched.
    case notSaved(epoch: Int, detail: String, runDir: String)
    /// Another process holds the run folder.
    case folderInUse(runDir: String)
    /// Data parallelism: these ranks hold another model than rank 0 after `epoch` epochs.
    case ranksDiffer(epoch: Int, ranks: [Int])
    case unsupportedOnDevice(String)

    public var description: String {
        switch self {
        case .nonFiniteLoss(let e, let s, let l, let dir, let good):
            let kept = good > 0
                ? "the checkpoint of epoch \(good) in \(dir)/checkpoint is kept; resume with a lower --lr or fix the data"
                : "no epoch had finished, so there is no checkpoint yet"
            return "training stopped: the loss became \(l) at epoch \(e), step \(s); \(kept)"
        case .noCheckpoint(let dir):
            return "cannot resume: '\(dir)/checkpoint/state.safetensors' does not exist (was the run started in '\(dir)'?)"
        case .badCheckpoint(let p, let d): return "cannot resume from '\(p)': \(d)"
        case .notSaved(let e, let d, let dir):
            let next = e > 1 ? "the checkpoint of epoch \(e - 1) is intact; free space and continue with: clicktrain train --resume \(dir)"
                : "nothing was saved; free space and start the run again"
            return "training stopped: epoch \(e) could not be saved (\(d)); \(next)"
        case .folderInUse(let dir):
            return "'\(dir)' is in use by another clicktrain process training there; wait for it to end or choose another --out"
        case .unsupportedOnDevice(let what): return "--device cuda does not run \(what) yet"
        case .ranksDiffer(let epoch, let ranks):
            return "after epoch \(epoch) rank\(ranks.count == 1 ? "" : "s") \(ranks.map(String.init).joined(separator: ", ")) hold\(ranks.count == 1 ? "s" : "") other weights, masks or pruning state than rank 0; stopping before this epoch is saved (the previous checkpoint is intact)"
        }
    }
}
