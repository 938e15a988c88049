import ClickTrainData
import ClickTrainNN
import ClickTrainPruning
import ClickTrainSparse
import Foundation

/// The training method of a run (`method:` in YAML, `--method` on the command line).
public enum MethodKind: String, CaseIterable, Sendable {
    /// No pruning.
    case dense
    /// Pattern pruning during training (ClickTrain, ICS'21).
    case clicktrain
    /// Prune after training: magnitude patterns at the hard-prune epoch, then fine-tuning.
    case pat
    /// Channel pruning by group lasso with periodic rebuilds (PruneTrain, SC'19).
    case prunetrain

    /// Methods that prune 3x3 kernels to patterns.
    public var usesPatterns: Bool { self == .clicktrain || self == .pat }
}

/// The learning-rate schedule's shape (`lr_schedule:`).
public enum ScheduleKind: String, CaseIterable, Sendable {
    case cosine, step, constant
}

/// Where the pattern pool comes from (`pattern_pool:`).
public enum PatternPoolKind: String, CaseIterable, Sendable {
    /// Built from the importance of the weights (ClickTrain's stage 2).
    case dynamic
    /// Fixed lists of 4, 8 or 12 four-weight patterns.
    case generic
}

/// Everything that determines a run (with its seed): read from flags or a YAML file and
/// saved as `config.yaml` in the run folder. Property names are the YAML keys; every key
/// is defined once, in `RunConfig.options`, which reads YAML and command lines, writes
/// `config.yaml` and prints the help.
public struct RunConfig: Equatable, Sendable {
    public var model = "resnet20"
    public var dataset: DatasetKind = .fashionMNIST
    /// Data folder; empty means the data set's default location.
    public var data = ""
    /// Starting weights (a `state_dict` safetensors file with PyTorch names); empty: random.
    public var init_weights = ""
    public var epochs = 12
    public var batch_size = 128
    public var learning_rate: Float = 0.1
    public var momentum: Float = 0.9
    public var nesterov = false
    public var weight_decay: Float = 5e-4
    /// Apply weight decay to BN parameters and biases too (PyTorch's default).
    public var decay_bn_bias = true
    public var lr_schedule: ScheduleKind = .cosine
    /// Step-schedule milestones in epochs (the official configs' `schedule`).
    public var schedule: [Int] = []
    public var gamma: Float = 0.1
    public var warmup_epochs: Double = 0
    public var label_smoothing: Float = 0
    /// Random-crop padding in pixels; nil = the data set's default (2 for 28x28, 4 for 32x32).
    public var crop_padding: Int?
    /// Horizontal flips; nil = the data set's default (on for CIFAR only).
    public var horizontal_flip: Bool?
    public var seed: UInt64 = 1
    /// Threads for every kernel; nil = all cores.
    public var threads: Int?
    /// Data parallelism: batch norm over the global batch (all ranks) instead of each rank's shard.
    public var sync_bn = false
    /// Stop after this many steps per epoch (0 = whole epoch): for smoke tests.
    public var max_steps_per_epoch = 0
    /// Activation-gradient pruning target rate (0 = off).
    public var grad_prune: Double = 0
    public var grad_prune_dist: GradientDistribution = .gaussian
    public var grad_prune_rule: ThresholdRule = .calibrated
    public var grad_prune_exempt_first = false
    public var grad_prune_exempt_last = false
    public var method: MethodKind = .dense
    /// Patterns in the pool (K), as the official `num_patterns`.
    public var num_patterns = 4
    /// Weights kept per 3x3 kernel (n).
    public var pattern_weights = 4
    public var pattern_pool: PatternPoolKind = .dynamic
    public var pool_scope: PatternPruningConfig.PoolScope = .layer
    /// Epochs completed before the pattern choice; nil = 30% of the run (with hard pruning).
    public var epoch_choose_p_k: Int?
    /// Epochs completed before hard pruning (ClickTrain) or magnitude pruning (PAT); nil = 30% of the run.
    public var epoch_hard_prune_p_k: Int?
    public var grp_lasso_coeff: Float = 2.5e-4
    /// Connectivity ratios in percent per layer (official configs, `module.` prefix allowed);
    /// when absent, derived from `compression`.
    public var prune_ratios: [String: Double]?
    /// Target conv compression ratio when `prune_ratios` is absent.
    public var compression: Double = 8
    /// Steps before the choice whose importance (W ⊙ G)² is accumulated.
    public var importance_window = 200
    /// PruneTrain: epochs between reconfigurations; nil = a fifth of the run (the paper's
    /// 10 of 182 CIFAR epochs would never fire in a short run).
    public var prunetrain_interval: Int?
    /// PruneTrain: a channel whose weights all stay below this is removed.
    public var prunetrain_threshold: Float = 1e-4
    /// PruneTrain: share of the group-lasso penalty in the first step's loss, which sets λ.
    public var prunetrain_penalty_share: Float = 0.2

    /// Read from a published ClickTrain file (sections, file-name model and data set): its
    /// ratios may name layers the model lacks (skipped with a warning, where our own flat
    /// configs are strict) and a new `--epochs` rescales its schedule. Not a key.
    public var published = false

    public init() {}

    /// A configuration error: `source` is the file or "command line".
    public struct Invalid: Error, CustomStringConvertible {
        public let source: String
        public let detail: String
        public init(source: String, detail: String) {
            self.source = source
            self.detail = detail
        }
        public var description: String { "\(source): \(detail)" }
    }

    /// Checks ranges and combinations; `source` names the file or "command line" in the
    /// message, which then names the flags instead of the YAML keys. With `customModel`
    /// the model is the caller's own and `model` only names it.
    public func validate(source: String, customModel: Bool = false) throws {
        func bad(_ d: String) -> Invalid {
            Invalid(source: source, detail: source == "command line" ? RunConfig.flagNames(in: d) : d)
        }
        if !customModel {
            guard ModelZoo.names.contains(ModelZoo.canonicalName(model)) else { throw bad(UnknownModelError(name: model).description) }
        } else if model.isEmpty {
            throw bad("model must name the custom model")
        }
        guard epochs >= 1 else { throw bad("epochs must be at least 1, got \(epochs)") }
        guard batch_size >= 1 else { throw bad("batch_size must be at least 1, got \(batch_size)") }
        guard learning_rate > 0, learning_rate.isFinite else { throw bad("learning_rate must be positive, got \(learning_rate)") }
        guard (0..<1).contains(momentum) else { throw bad("momentum must be in [0, 1), got \(momentum)") }
        guard weight_decay >= 0, weight_decay.isFinite else { throw bad("weight_decay must be >= 0, got \(weight_decay)") }
        guard (0..<1).contains(label_smoothing) else { throw bad("label_smoothing must be in [0, 1)") }
        if let t = threads, t < 1 { throw bad("threads must be at least 1, got \(t)") }
        guard (0..<1).contains(grad_prune) else { throw bad("grad_prune must be in [0, 1), got \(grad_prune)") }
        if let i = prunetrain_interval, i < 1 { throw bad("prunetrain_interval must be at least 1, got \(i)") }
        guard prunetrain_penalty_share > 0 && prunetrain_penalty_share < 1 else {
            throw bad("prunetrain_penalty_share must be in (0, 1), got \(prunetrain_penalty_share)")
        }
        if let c = epoch_choose_p_k, c < 0 || c > epochs { throw bad("epoch_choose_p_k must be in 0…epochs, got \(c)") }
        if let h = epoch_hard_prune_p_k, h < 0 || h > epochs { throw bad("epoch_hard_prune_p_k must be in 0…epochs, got \(h)") }
        guard compression >= 1, compression.isFinite else { throw bad("compression must be at least 1, got \(compression)") }
        guard gamma > 0, gamma.isFinite else { throw bad("gamma must be positive, got \(gamma)") }
        guard warmup_epochs >= 0, warmup_epochs.isFinite else { throw bad("warmup_epochs must be >= 0, got \(warmup_epochs)") }
        guard schedule.allSatisfy({ $0 >= 0 }) else { throw bad("schedule (milestones) must be epochs >= 0, got \(schedule)") }
        if let p = crop_padding, p < 0 { throw bad("crop_padding must be >= 0, got \(p)") }
        guard max_steps_per_epoch >= 0 else { throw bad("max_steps_per_epoch must be >= 0, got \(max_steps_per_epoch)") }
        guard (1...126).contains(num_patterns) else { throw bad("num_patterns must be in 1…126, got \(num_patterns)") }
        guard (1...9).contains(pattern_weights) else { throw bad("pattern_weights must be in 1…9, got \(pattern_weights)") }
        guard grp_lasso_coeff >= 0, grp_lasso_coeff.isFinite else { throw bad("grp_lasso_coeff must be >= 0, got \(grp_lasso_coeff)") }
        guard importance_window >= 1 else { throw bad("importance_window must be at least 1, got \(importance_window)") }
        guard prunetrain_threshold >= 0, prunetrain_threshold.isFinite else {
            throw bad("prunetrain_threshold must be >= 0, got \(prunetrain_threshold)")
        }
        for (layer, r) in prune_ratios ?? [:] where !(r >= 0 && r < 100) {
            throw bad("prune_ratios: '\(layer)' = \(r), expected a percentage in [0, 100)")
        }
        if method == .clicktrain, let c = epoch_choose_p_k, let h = epoch_hard_prune_p_k, c > h {
            throw bad("epoch_choose_p_k (\(c)) must not come after epoch_hard_prune_p_k (\(h)): patterns are chosen before hard pruning")
        }
        if method == .clicktrain, epoch_choose_p_k == 0 {
            throw bad("epoch_choose_p_k must be at least 1: the pattern choice needs one epoch of importance")
        }
    }

    /// `text` with every YAML key that has a flag written as the flag (`--choose-epoch`).
    static func flagNames(in text: String) -> String {
        var out = text
        for o in options.sorted(by: { ($0.key ?? "").count > ($1.key ?? "").count }) {
            guard let key = o.key, let flag = o.flag, o.flagValue == nil else { continue }
            out = out.replacingOccurrences(of: #"(?<![A-Za-z_-])"# + key + #"(?![A-Za-z_])"#, with: "--" + flag,
                                           options: .regularExpression)
        }
        return out
    }

    public var lrScheduleValue: LRSchedule {
        switch lr_schedule {
        case .step: return .step(milestones: schedule, gamma: gamma)
        case .constant: return .constant
        case .cosine: return .cosine
        }
    }

    /// The training batches' normalisation, crops and flips for `dataset` (its
    /// `.evaluation` normalises only, for test batches).
    public func augmentation(for dataset: ImageDataset) -> Augmentation {
        let norm = self.dataset.normalization
        let pad = crop_padding ?? (dataset.height <= 28 ? 2 : 4)
        return Augmentation(mean: norm.mean, std: norm.std, cropPadding: pad,
                            horizontalFlip: horizontal_flip ?? self.dataset.flipByDefault)
    }

    public var dataDirectory: String { data.isEmpty ? dataset.defaultDirectory : data }

    /// The schedule epochs left to defaults, written out as they will be used (so that a
    /// run's `config.yaml` says when it chooses, hard-prunes or rebuilds).
    public func resolvingDefaults() -> RunConfig {
        var c = self
        if method.usesPatterns {
            let d = PatternPruningConfig.defaultEpochs(totalEpochs: epochs)
            if method == .clicktrain { c.epoch_choose_p_k = epoch_choose_p_k ?? d.choose }
            c.epoch_hard_prune_p_k = epoch_hard_prune_p_k ?? d.hard
        }
        if method == .prunetrain { c.prunetrain_interval = prunetrain_interval ?? max(1, epochs / 5) }
        return c
    }

    /// Reads a YAML file (see `decode(yaml:source:)`).
    public static func load(yamlFile path: String) throws -> RunConfig {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw Invalid(source: path, detail: "cannot read the file")
        }
        return try decode(yaml: text, source: path)
    }
}
