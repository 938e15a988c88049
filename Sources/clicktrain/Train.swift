import ArgumentParser
import ClickTrainCore
import ClickTrainData
import ClickTrainNN
import ClickTrainTraining
import Foundation

struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train a model; writes a run folder with config.yaml, metrics.jsonl, model.safetensors and a checkpoint.",
        discussion: """
            Defaults train ResNet-20 on Fashion-MNIST from /usr/share/datasets/fashion-mnist (Debian package \
            dataset-fashion-mnist) for 12 epochs with a cosine schedule. Options given on the command line \
            override those of --config. A run stopped for any reason continues with --resume RUN_DIR.
            """)

    @Option(help: "Model: \(ModelZoo.names.joined(separator: ", ")). [default: resnet20]") var model: String?
    @Option(help: "Data set: fashion-mnist, mnist, cifar10, cifar100. [default: fashion-mnist]") var dataset: String?
    @Option(help: "Folder holding the data set's files. [default: the data set's usual location]") var data: String?
    @Option(help: "Number of epochs. [default: 12]") var epochs: Int?
    @Option(help: "Images per training batch. [default: 128]") var batchSize: Int?
    @Option(help: "Base learning rate. [default: 0.1]") var lr: Float?
    @Option(help: "SGD momentum. [default: 0.9]") var momentum: Float?
    @Option(help: "Weight decay (L2). [default: 5e-4]") var weightDecay: Float?
    @Flag(help: "Use Nesterov momentum.") var nesterov = false
    @Flag(help: "Exclude batch-norm parameters and biases from weight decay.") var noDecayBnBias = false
    @Option(help: "Learning-rate schedule: cosine, step or constant. [default: cosine]") var lrSchedule: String?
    @Option(help: "Comma-separated epochs at which the step schedule multiplies the rate by --gamma, e.g. 5,8.")
    var milestones: String?
    @Option(help: "Factor of the step schedule. [default: 0.1]") var gamma: Float?
    @Option(help: "Epochs of linear learning-rate warm-up. [default: 0]") var warmupEpochs: Double?
    @Option(help: "Label smoothing of the cross-entropy loss. [default: 0]") var labelSmoothing: Float?
    @Option(help: "Random-crop padding in pixels (0 turns cropping off). [default: 2 for 28x28, 4 for 32x32]")
    var cropPadding: Int?
    @Option(help: "Horizontal flips: on or off. [default: on for CIFAR, off for digits and clothes]") var flip: String?
    @Option(help: "Seed for initialisation, shuffling and augmentation. [default: 1]") var seed: UInt64?
    @Option(help: "Threads for every kernel. [default: all cores]") var threads: Int?
    @Option(help: "Stop each epoch after this many steps (smoke tests). [default: whole epoch]") var maxStepsPerEpoch: Int?
    @Option(help: "Activation-gradient pruning: target fraction of zeros in every conv/linear output gradient, e.g. 0.9. [default: off]")
    var gradPrune: Double?
    @Option(help: "Distribution its threshold is fitted to: gaussian or lognormal. [default: gaussian]")
    var gradPruneDist: String?
    @Option(help: "Threshold rule: calibrated (zeros = rate) or paper (rate of the fit below τ). [default: calibrated]")
    var gradPruneRule: String?
    @Option(help: "Layers exempt from gradient pruning: first, last or first,last.") var gradPruneExempt: String?
    @Option(help: "Pruning method: dense, clicktrain (patterns during training), pat (prune after training) or prunetrain (channel pruning). [default: dense]")
    var method: String?
    @Option(help: "Target conv compression ratio for clicktrain/pat, from which per-layer ratios are derived. [default: 8]")
    var compression: Double?
    @Option(help: "Patterns in the pool (4, 8 or 12). [default: 4]") var numPatterns: Int?
    @Option(help: "Pattern pool: dynamic (from importance) or generic (fixed lists). [default: dynamic]")
    var patternPool: String?
    @Option(help: "One pattern pool per layer or for the whole network: layer or network. [default: layer]")
    var poolScope: String?
    @Option(help: "Epochs before the pattern choice. [default: 61/190 of the run]") var chooseEpoch: Int?
    @Option(help: "Epochs before hard pruning (PAT: before magnitude pruning). [default: 141/190 of the run]")
    var hardPruneEpoch: Int?
    @Option(help: "Group-lasso coefficient λ. [default: 2.5e-4]") var groupLasso: Float?
    @Option(help: "PruneTrain: epochs between channel removals. [default: a fifth of the run]") var prunetrainInterval: Int?
    @Option(help: "PruneTrain: share of the group-lasso penalty in the first step's loss, which sets λ. [default: 0.2]")
    var prunetrainShare: Float?
    @Option(help: "Run folder to write. [default: runs/<model>-<dataset>-<date>]") var out: String?
    @Option(help: "YAML configuration file (keys as in config.yaml).") var config: String?
    @Option(help: "Continue the run in this folder from its last checkpoint (other options are ignored).")
    var resume: String?

    func run() throws {
        try reportingErrors {
            if let dir = resume {
                try Trainer.resume(runDir: dir).run()
                return
            }
            var cfg = try config.map { try RunConfig.load(yamlFile: $0) } ?? RunConfig()
            if let path = config, let text = try? String(contentsOfFile: path, encoding: .utf8) {
                let unused = RunConfig.unusedKeys(yaml: text)
                if !unused.isEmpty {
                    FileHandle.standardError.write(Data("""
                        warning: \(path): ignoring keys clicktrain does not use: \(unused.joined(separator: ", ")) \
                        (see `clicktrain train --help` and the config.yaml of any run for the keys it reads)

                        """.utf8))
                }
            }
            if let v = model { cfg.model = v }
            if let v = dataset { cfg.dataset = v }
            if let v = data { cfg.data = v }
            if let v = epochs { cfg.epochs = v }
            if let v = batchSize { cfg.batch_size = v }
            if let v = lr { cfg.learning_rate = v }
            if let v = momentum { cfg.momentum = v }
            if let v = weightDecay { cfg.weight_decay = v }
            if nesterov { cfg.nesterov = true }
            if noDecayBnBias { cfg.decay_bn_bias = false }
            if let v = milestones {
                let parts = v.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
                guard parts.allSatisfy({ $0 != nil }) else {
                    throw ValidationError("--milestones '\(v)': expected comma-separated epochs, e.g. 5,8")
                }
                cfg.schedule = parts.map { $0! }
                if lrSchedule == nil { cfg.lr_schedule = "step" }
            }
            if let v = lrSchedule { cfg.lr_schedule = v }
            if let v = gamma { cfg.gamma = v }
            if let v = warmupEpochs { cfg.warmup_epochs = v }
            if let v = labelSmoothing { cfg.label_smoothing = v }
            if let v = cropPadding { cfg.crop_padding = v }
            if let v = flip {
                guard ["on", "off"].contains(v) else { throw ValidationError("--flip must be on or off, got '\(v)'") }
                cfg.horizontal_flip = v == "on"
            }
            if let v = seed { cfg.seed = v }
            if let v = threads { cfg.threads = v }
            if let v = maxStepsPerEpoch { cfg.max_steps_per_epoch = v }
            if let v = gradPrune { cfg.grad_prune = v }
            if let v = method { cfg.method = v }
            if let v = compression { cfg.compression = v }
            if let v = numPatterns { cfg.num_patterns = v }
            if let v = patternPool { cfg.pattern_pool = v }
            if let v = poolScope { cfg.pool_scope = v }
            if let v = chooseEpoch { cfg.epoch_choose_p_k = v }
            if let v = hardPruneEpoch { cfg.epoch_hard_prune_p_k = v }
            if let v = groupLasso { cfg.grp_lasso_coeff = v }
            if let v = prunetrainInterval { cfg.prunetrain_interval = v }
            if let v = prunetrainShare { cfg.prunetrain_penalty_share = v }
            if let v = gradPruneDist { cfg.grad_prune_dist = v }
            if let v = gradPruneRule { cfg.grad_prune_rule = v }
            if let v = gradPruneExempt {
                let parts = Set(v.split(separator: ",").map(String.init))
                guard parts.isSubset(of: ["first", "last"]) else {
                    throw ValidationError("--grad-prune-exempt takes first, last or first,last; got '\(v)'")
                }
                cfg.grad_prune_exempt_first = parts.contains("first")
                cfg.grad_prune_exempt_last = parts.contains("last")
            }
            try cfg.validate(source: config ?? "command line")
            let dir = out ?? defaultRunDir(cfg)
            try Trainer(config: cfg, runDir: dir).run()
        }
    }

    func defaultRunDir(_ cfg: RunConfig) -> String {
        let f = DateFormatter()
        f.dateFormat = "yyyyMMdd-HHmmss"
        return "runs/\(ModelZoo.canonicalName(cfg.model))-\(cfg.datasetKind.rawValue)-\(f.string(from: Date()))"
    }
}

/// Prints any error as one line on stderr and exits 1 (never a crash trace).
func reportingErrors(_ body: () throws -> Void) throws {
    do {
        try body()
    } catch let e as ValidationError {
        throw e
    } catch let e as ExitCode {
        throw e
    } catch {
        FileHandle.standardError.write(Data("error: \(error)\n".utf8))
        throw ExitCode(1)
    }
}
