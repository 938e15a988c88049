import ClickTrainCore
import ClickTrainNN
import Foundation

/// Where a training step stands, handed to every hook of a step.
public struct StepInfo: Sendable {
    /// 0-based epoch and step within it.
    public var epoch: Int
    public var step: Int
    public var stepsPerEpoch: Int
    /// The step's mean loss (known from `afterBackward` on; 0 at `stepStart`).
    public var loss: Float

    public init(epoch: Int, step: Int, stepsPerEpoch: Int, loss: Float = 0) {
        self.epoch = epoch
        self.step = step
        self.stepsPerEpoch = stepsPerEpoch
        self.loss = loss
    }
}

/// A structural change to the model that a method made (channels removed): for each
/// parameter whose shape changed, the indices it kept along one axis, so the optimizer's
/// state can follow.
public struct ModelChange: Sendable {
    /// The indices kept along one axis of a parameter that lost channels.
    public struct Slice: Sendable {
        public var axis: Int
        public var indices: [Int]
        public init(axis: Int, indices: [Int]) {
            self.axis = axis
            self.indices = indices
        }
    }
    /// By parameter name (`layer1.0.conv1.weight`).
    public var slices: [String: Slice]
    /// For the progress line, e.g. "rebuilt 3 blocks".
    public var summary: String

    public init(slices: [String: Slice] = [:], summary: String = "") {
        self.slices = slices
        self.summary = summary
    }
}

/// A method's part of a checkpoint: text metadata and named tensors.
public struct MethodCheckpoint {
    public var metadata: [String: String] = [:]
    /// In the order they are written.
    public var tensors: [(name: String, tensor: Tensor)] = []

    public init(metadata: [String: String] = [:], tensors: [(name: String, tensor: Tensor)] = []) {
        self.metadata = metadata
        self.tensors = tensors
    }

    public func tensor(_ name: String) -> Tensor? { tensors.first { $0.name == name }?.tensor }
}

/// `value` as JSON with sorted keys: the same bytes in every process (data-parallel ranks
/// compare their checkpoints), where a plain encoder's key order may differ.
func checkpointJSON<T: Encodable>(_ value: T) throws -> String {
    let enc = JSONEncoder()
    enc.outputFormatting = [.sortedKeys]
    return String(decoding: try enc.encode(value), as: UTF8.self)
}

/// The checkpoint does not hold what a method needs to resume.
public struct MethodStateError: Error, CustomStringConvertible {
    public let detail: String
    public init(_ detail: String) { self.detail = detail }
    public var description: String { detail }
}

/// What a training method does around the steps of a run. The trainer (and a loop written
/// by hand) calls the hooks of every method of the run in order; methods combine (e.g.
/// ClickTrain with activation-gradient pruning). Every hook has a default that does
/// nothing, so a method implements only what it needs.
///
/// One step: `stepStart`, forward, loss, backward, `afterBackward` (the gradients are
/// there), `beforeOptimizerStep` (the last chance to change them), optimizer step.
public protocol TrainingMethod: AnyObject {
    /// The epoch's phase for `metrics.jsonl` (e.g. "warm-up"), or nil.
    func phase(epoch: Int) -> String?
    /// Before the first step of `epoch` (0-based).
    func epochStart(epoch: Int) throws
    func stepStart(_ step: StepInfo)
    func afterBackward(_ step: StepInfo)
    func beforeOptimizerStep(_ step: StepInfo)
    /// Whether `afterBackward` or `beforeOptimizerStep` does anything at this step. On a
    /// step device the hooks cost a round trip of the weights and gradients, which steps
    /// answering false skip. Default: true.
    func usesStepHooks(_ step: StepInfo) -> Bool
    /// Adds the method's figures to the finished epoch's metrics (before `epochEnd`);
    /// returns a note for the progress line ("" for none).
    func addMetrics(to metrics: inout EpochMetrics) -> String
    /// After the epoch's steps and evaluation; `completedEpochs` counts it. Returns the
    /// change when the method changed the model's structure.
    func epochEnd(completedEpochs: Int) -> ModelChange?
    /// Some method changed the model's structure: re-attach to the new layers.
    func modelDidChange()
    /// Whether the method prunes weights (runs then report their compression).
    var prunesWeights: Bool { get }
    /// Whether the conv kernels now run on pattern-sparse weights (for FLOPs accounting).
    var trainsSparse: Bool { get }
    /// What a checkpoint keeps of the method.
    func checkpoint() throws -> MethodCheckpoint
    /// Restores what `checkpoint()` wrote, before the model's weights are loaded. Returns
    /// the change when restoring reshaped the model.
    func restore(from checkpoint: MethodCheckpoint) throws -> ModelChange?
    /// Metadata the method adds to `model.safetensors`.
    func modelMetadata() -> [String: String]
    /// Files the method writes into the run folder next to the model (name, contents);
    /// `modelMetadata` is that of `model.safetensors`.
    func runFiles(modelMetadata: [String: String]) throws -> [(name: String, contents: Data)]
}

extension TrainingMethod {
    public func phase(epoch: Int) -> String? { nil }
    public func epochStart(epoch: Int) throws {}
    public func stepStart(_ step: StepInfo) {}
    public func afterBackward(_ step: StepInfo) {}
    public func beforeOptimizerStep(_ step: StepInfo) {}
    public func usesStepHooks(_ step: StepInfo) -> Bool { true }
    public func addMetrics(to metrics: inout EpochMetrics) -> String { "" }
    public func epochEnd(completedEpochs: Int) -> ModelChange? { nil }
    public func modelDidChange() {}
    public var prunesWeights: Bool { false }
    public var trainsSparse: Bool { false }
    public func checkpoint() throws -> MethodCheckpoint { MethodCheckpoint() }
    public func restore(from checkpoint: MethodCheckpoint) throws -> ModelChange? { nil }
    public func modelMetadata() -> [String: String] { [:] }
    public func runFiles(modelMetadata: [String: String]) throws -> [(name: String, contents: Data)] { [] }
}
