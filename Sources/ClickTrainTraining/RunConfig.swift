import ClickTrainData
import ClickTrainNN
import ClickTrainSparse
import Foundation
import Yams

/// Everything that determines a run (with its seed): read from flags or a YAML file and
/// saved as `config.yaml` in the run folder. YAML keys are snake_case; the official
/// ClickTrain configs' keys (`epochs`, `learning_rate`, `schedule` as LR milestones)
/// are understood.
public struct RunConfig: Codable, Equatable, Sendable {
    public var model = "resnet20"
    public var dataset = "fashion-mnist"
    /// Data folder; empty means the data set's default location.
    public var data = ""
    public var epochs = 12
    public var batch_size = 128
    public var learning_rate: Float = 0.1
    public var momentum: Float = 0.9
    public var nesterov = false
    public var weight_decay: Float = 5e-4
    /// Apply weight decay to BN parameters and biases too (PyTorch's default).
    public var decay_bn_bias = true
    /// `cosine`, `step` or `constant`.
    public var lr_schedule = "cosine"
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
    /// Stop after this many steps per epoch (0 = whole epoch): for smoke tests.
    public var max_steps_per_epoch = 0
    /// Activation-gradient pruning target rate (0 = off), SPEC §4.
    public var grad_prune: Double = 0
    /// `gaussian` or `lognormal`.
    public var grad_prune_dist = "gaussian"
    /// `calibrated` (zeros = rate) or `paper` (the fitted rate below the threshold).
    public var grad_prune_rule = "calibrated"
    public var grad_prune_exempt_first = false
    public var grad_prune_exempt_last = false
    /// `dense`, `clicktrain` (pattern pruning during training) or `pat` (prune after training).
    public var method = "dense"
    /// Patterns in the pool (K), as the official `num_patterns`.
    public var num_patterns = 4
    /// Weights kept per 3x3 kernel (n).
    public var pattern_weights = 4
    /// `dynamic` (built from importance) or `generic` (fixed 4/8/12 lists).
    public var pattern_pool = "dynamic"
    /// `layer` (a pool per layer) or `network` (one pool).
    public var pool_scope = "layer"
    /// Epochs completed before the pattern choice; nil = 61/190 of the run.
    public var epoch_choose_p_k: Int?
    /// Epochs completed before hard pruning (ClickTrain) or magnitude pruning (PAT); nil = 141/190.
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
    /// PruneTrain: share of the group-lasso penalty in the first step's loss, which sets λ
    /// (SPEC §3: 0.2).
    public var prunetrain_penalty_share: Float = 0.2

    public init() {}

    public struct Invalid: Error, CustomStringConvertible {
        public let source: String
        public let detail: String
        public var description: String { "\(source): \(detail)" }
    }

    /// Checks ranges and names; `source` names the file or "command line" in the message.
    public func validate(source: String) throws {
        func bad(_ d: String) -> Invalid { Invalid(source: source, detail: d) }
        guard ModelZoo.names.contains(ModelZoo.canonicalName(model)) else { throw bad(UnknownModelError(name: model).description) }
        _ = try DatasetKind(name: dataset)
        guard epochs >= 1 else { throw bad("epochs must be at least 1, got \(epochs)") }
        guard batch_size >= 1 else { throw bad("batch_size must be at least 1, got \(batch_size)") }
        guard learning_rate > 0, learning_rate.isFinite else { throw bad("learning_rate must be positive, got \(learning_rate)") }
        guard (0..<1).contains(momentum) else { throw bad("momentum must be in [0, 1), got \(momentum)") }
        guard weight_decay >= 0 else { throw bad("weight_decay must be >= 0, got \(weight_decay)") }
        guard ["cosine", "step", "constant"].contains(lr_schedule) else {
            throw bad("lr_schedule must be cosine, step or constant, got '\(lr_schedule)'")
        }
        guard (0..<1).contains(label_smoothing) else { throw bad("label_smoothing must be in [0, 1)") }
        if let t = threads, t < 1 { throw bad("threads must be at least 1, got \(t)") }
        guard (0..<1).contains(grad_prune) else { throw bad("grad_prune must be in [0, 1), got \(grad_prune)") }
        guard GradientDistribution(rawValue: grad_prune_dist) != nil else {
            throw bad("grad_prune_dist must be gaussian or lognormal, got '\(grad_prune_dist)'")
        }
        guard ["dense", "clicktrain", "pat", "prunetrain"].contains(method) else {
            throw bad("method must be dense, clicktrain, pat or prunetrain, got '\(method)'")
        }
        if let i = prunetrain_interval, i < 1 { throw bad("prunetrain_interval must be at least 1, got \(i)") }
        guard prunetrain_penalty_share > 0 && prunetrain_penalty_share < 1 else {
            throw bad("prunetrain_penalty_share must be in (0, 1), got \(prunetrain_penalty_share)")
        }
        guard ["dynamic", "generic"].contains(pattern_pool) else { throw bad("pattern_pool must be dynamic or generic") }
        guard ["layer", "network"].contains(pool_scope) else { throw bad("pool_scope must be layer or network") }
        if let c = epoch_choose_p_k, c < 0 || c > epochs { throw bad("epoch_choose_p_k must be in 0…epochs, got \(c)") }
        if let h = epoch_hard_prune_p_k, h < 0 || h > epochs { throw bad("epoch_hard_prune_p_k must be in 0…epochs, got \(h)") }
        guard compression >= 1 else { throw bad("compression must be at least 1, got \(compression)") }
        guard ThresholdRule(rawValue: grad_prune_rule) != nil else {
            throw bad("grad_prune_rule must be calibrated or paper, got '\(grad_prune_rule)'")
        }
    }

    public var lrScheduleValue: LRSchedule {
        switch lr_schedule {
        case "step": return .step(milestones: schedule, gamma: gamma)
        case "constant": return .constant
        default: return .cosine
        }
    }

    public var datasetKind: DatasetKind { (try? DatasetKind(name: dataset)) ?? .fashionMNIST }
    public var dataDirectory: String { data.isEmpty ? datasetKind.defaultDirectory : data }

    // Unknown keys are ignored when decoding, so official configs with pruning keys load.
    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = RunConfig.defaults
        model = try c.decodeIfPresent(String.self, forKey: .model) ?? d.model
        dataset = try c.decodeIfPresent(String.self, forKey: .dataset) ?? d.dataset
        data = try c.decodeIfPresent(String.self, forKey: .data) ?? d.data
        epochs = try c.decodeIfPresent(Int.self, forKey: .epochs) ?? d.epochs
        batch_size = try c.decodeIfPresent(Int.self, forKey: .batch_size) ?? d.batch_size
        learning_rate = try c.decodeIfPresent(Float.self, forKey: .learning_rate) ?? d.learning_rate
        momentum = try c.decodeIfPresent(Float.self, forKey: .momentum) ?? d.momentum
        nesterov = try c.decodeIfPresent(Bool.self, forKey: .nesterov) ?? d.nesterov
        weight_decay = try c.decodeIfPresent(Float.self, forKey: .weight_decay) ?? d.weight_decay
        decay_bn_bias = try c.decodeIfPresent(Bool.self, forKey: .decay_bn_bias) ?? d.decay_bn_bias
        schedule = try c.decodeIfPresent([Int].self, forKey: .schedule) ?? d.schedule
        lr_schedule = try c.decodeIfPresent(String.self, forKey: .lr_schedule) ?? (schedule.isEmpty ? d.lr_schedule : "step")
        gamma = try c.decodeIfPresent(Float.self, forKey: .gamma) ?? d.gamma
        warmup_epochs = try c.decodeIfPresent(Double.self, forKey: .warmup_epochs) ?? d.warmup_epochs
        label_smoothing = try c.decodeIfPresent(Float.self, forKey: .label_smoothing) ?? d.label_smoothing
        crop_padding = try c.decodeIfPresent(Int.self, forKey: .crop_padding)
        horizontal_flip = try c.decodeIfPresent(Bool.self, forKey: .horizontal_flip)
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? d.seed
        threads = try c.decodeIfPresent(Int.self, forKey: .threads)
        max_steps_per_epoch = try c.decodeIfPresent(Int.self, forKey: .max_steps_per_epoch) ?? d.max_steps_per_epoch
        grad_prune = try c.decodeIfPresent(Double.self, forKey: .grad_prune) ?? d.grad_prune
        grad_prune_dist = try c.decodeIfPresent(String.self, forKey: .grad_prune_dist) ?? d.grad_prune_dist
        grad_prune_rule = try c.decodeIfPresent(String.self, forKey: .grad_prune_rule) ?? d.grad_prune_rule
        grad_prune_exempt_first = try c.decodeIfPresent(Bool.self, forKey: .grad_prune_exempt_first) ?? d.grad_prune_exempt_first
        grad_prune_exempt_last = try c.decodeIfPresent(Bool.self, forKey: .grad_prune_exempt_last) ?? d.grad_prune_exempt_last
        method = try c.decodeIfPresent(String.self, forKey: .method) ?? d.method
        num_patterns = try c.decodeIfPresent(Int.self, forKey: .num_patterns) ?? d.num_patterns
        pattern_weights = try c.decodeIfPresent(Int.self, forKey: .pattern_weights) ?? d.pattern_weights
        pattern_pool = try c.decodeIfPresent(String.self, forKey: .pattern_pool) ?? d.pattern_pool
        pool_scope = try c.decodeIfPresent(String.self, forKey: .pool_scope) ?? d.pool_scope
        epoch_choose_p_k = try c.decodeIfPresent(Int.self, forKey: .epoch_choose_p_k)
        epoch_hard_prune_p_k = try c.decodeIfPresent(Int.self, forKey: .epoch_hard_prune_p_k)
        grp_lasso_coeff = try c.decodeIfPresent(Float.self, forKey: .grp_lasso_coeff) ?? d.grp_lasso_coeff
        prune_ratios = try c.decodeIfPresent([String: Double].self, forKey: .prune_ratios)
        compression = try c.decodeIfPresent(Double.self, forKey: .compression) ?? d.compression
        importance_window = try c.decodeIfPresent(Int.self, forKey: .importance_window) ?? d.importance_window
        prunetrain_interval = try c.decodeIfPresent(Int.self, forKey: .prunetrain_interval)
        prunetrain_threshold = try c.decodeIfPresent(Float.self, forKey: .prunetrain_threshold) ?? d.prunetrain_threshold
        prunetrain_penalty_share = try c.decodeIfPresent(Float.self, forKey: .prunetrain_penalty_share)
            ?? d.prunetrain_penalty_share
    }

    static let defaults = RunConfig()

    public static func load(yamlFile path: String) throws -> RunConfig {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw Invalid(source: path, detail: "cannot read the file")
        }
        return try decode(yaml: text, source: path)
    }

    /// Parses and validates YAML text; `source` names it in error messages.
    public static func decode(yaml text: String, source path: String) throws -> RunConfig {
        do {
            let cfg = try YAMLDecoder().decode(RunConfig.self, from: text)
            try cfg.validate(source: path)
            return cfg
        } catch let e as Invalid {
            throw e
        } catch let e as DecodingError {
            throw Invalid(source: path, detail: describe(e))
        } catch {
            throw Invalid(source: path, detail: "\(error)")
        }
    }

    public func yaml() throws -> String { try YAMLEncoder().encode(self) }

    /// Top-level keys of a YAML config that clicktrain does not read (official ClickTrain
    /// configs carry keys for their own tooling; a misspelt key lands here too).
    public static func unusedKeys(yaml text: String) -> [String] {
        guard let node = try? Yams.compose(yaml: text), let map = node.mapping else { return [] }
        var known = Set(["crop_padding", "horizontal_flip", "threads", "epoch_choose_p_k", "epoch_hard_prune_p_k",
                         "prune_ratios", "prunetrain_interval"])
        if let text = try? RunConfig().yaml(), let d = try? Yams.compose(yaml: text)?.mapping {
            for k in d.keys { if let s = k.string { known.insert(s) } }
        }
        return map.keys.compactMap(\.string).filter { !known.contains($0) }.sorted()
    }

    static func describe(_ e: DecodingError) -> String {
        switch e {
        case .typeMismatch(let t, let ctx), .valueNotFound(let t, let ctx):
            return "field '\(ctx.codingPath.map(\.stringValue).joined(separator: "."))' should be \(t): \(ctx.debugDescription)"
        case .keyNotFound(let k, _): return "missing field '\(k.stringValue)'"
        case .dataCorrupted(let ctx): return "invalid YAML: \(ctx.debugDescription)"
        @unknown default: return "\(e)"
        }
    }
}
