import ClickTrainData
import ClickTrainNN
import ClickTrainPruning
import Foundation
import Yams

extension RunConfig {
    /// Every configuration key, in the order `config.yaml` lists them.
    public static var options: [ConfigOption] {
        let patterns: (RunConfig) -> Bool = { $0.method.usesPatterns }
        let clicktrain: (RunConfig) -> Bool = { $0.method == .clicktrain }
        let prunetrain: (RunConfig) -> Bool = { $0.method == .prunetrain }
        let gradPrune: (RunConfig) -> Bool = { $0.grad_prune > 0 }
        return [
            .value("model", \.model, flag: "model", "Model: \(ModelZoo.names.joined(separator: ", ")).",
                   valueName: "<name>"),
            .value("dataset", \.dataset, flag: "dataset", "Data set."),
            ConfigOption(key: "data", flag: "data", valueName: "<dir>", flagValue: nil,
                         help: "Folder holding the data set's files.", defaultText: "the data set's usual location",
                         read: { c, v in c.data = try ConfigOption.scalar(v) },
                         write: { c in c.data.isEmpty ? nil : .scalar(c.data) }),
            ConfigOption(key: "init_weights", flag: "init", valueName: "<file>", flagValue: nil,
                         help: "Start from these weights: a safetensors state_dict with PyTorch names (a classifier with another class count starts fresh).",
                         defaultText: "random initialisation",
                         read: { c, v in c.init_weights = try ConfigOption.scalar(v) },
                         write: { c in c.init_weights.isEmpty ? nil : .scalar(c.init_weights) }),
            .value("epochs", \.epochs, flag: "epochs", "Number of epochs."),
            .value("batch_size", \.batch_size, flag: "batch-size", "Images per training batch."),
            .value("learning_rate", \.learning_rate, flag: "lr", "Base learning rate."),
            .value("momentum", \.momentum, flag: "momentum", "SGD momentum."),
            .flag("nesterov", \.nesterov, flag: "nesterov", sets: true, "Use Nesterov momentum."),
            .value("weight_decay", \.weight_decay, flag: "weight-decay", "Weight decay (L2)."),
            .flag("decay_bn_bias", \.decay_bn_bias, flag: "no-decay-bn-bias", sets: false,
                  "Exclude batch-norm parameters and biases from weight decay."),
            .value("lr_schedule", \.lr_schedule, flag: "lr-schedule", "Learning-rate schedule."),
            ConfigOption(key: "schedule", flag: "milestones", valueName: "<e1,e2,...>", flagValue: nil,
                         help: "Epochs at which the step schedule multiplies the rate by the gamma (sets the step schedule).",
                         defaultText: nil,
                         read: { c, v in
                             let items: [String]
                             switch v {
                             case .scalar(let s): items = s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                             case .list(let l): items = l
                             case .map: throw ConfigValueError(detail: "expected a list of epochs, e.g. [5, 8]")
                             }
                             let epochs = items.map { Int($0) }
                             guard epochs.allSatisfy({ $0 != nil }) else {
                                 throw ConfigValueError(detail: "expected epochs, e.g. 5,8; got '\(items.joined(separator: ","))'")
                             }
                             c.schedule = epochs.map { $0! }
                         },
                         write: { c in c.lr_schedule == .step ? .list(c.schedule.map(String.init)) : nil }),
            .value("gamma", \.gamma, flag: "gamma", "Factor of the step schedule.", when: { $0.lr_schedule == .step }),
            .value("warmup_epochs", \.warmup_epochs, flag: "warmup-epochs", "Epochs of linear learning-rate warm-up."),
            .value("label_smoothing", \.label_smoothing, flag: "label-smoothing", "Label smoothing of the cross-entropy loss."),
            .optional("crop_padding", \.crop_padding, flag: "crop-padding",
                      "Random-crop padding in pixels (0 turns cropping off).", default: "2 for 28x28, 4 for 32x32"),
            .optional("horizontal_flip", \.horizontal_flip, flag: "flip", "Horizontal flips.",
                      default: "on for CIFAR, off for digits and clothes"),
            .value("seed", \.seed, flag: "seed", "Seed for initialisation, shuffling and augmentation."),
            .optional("threads", \.threads, flag: "threads", "Threads for every kernel.",
                      default: "all cores; under mpirun the cores divided by the ranks on the machine"),
            .flag("sync_bn", \.sync_bn, flag: "sync-bn", sets: true,
                  "Under mpirun: batch norm over the global batch of all ranks (synchronised batch norm).",
                  when: { $0.sync_bn }),
            .value("max_steps_per_epoch", \.max_steps_per_epoch, flag: "max-steps-per-epoch",
                   "Stop each epoch after this many steps, for smoke tests (0: whole epochs).",
                   when: { $0.max_steps_per_epoch > 0 }),
            .value("grad_prune", \.grad_prune, flag: "grad-prune",
                   "Activation-gradient pruning: target fraction of zeros in every conv/linear output gradient, e.g. 0.9 (0: off).",
                   when: gradPrune),
            .value("grad_prune_dist", \.grad_prune_dist, flag: "grad-prune-dist",
                   "Distribution the gradient-pruning threshold is fitted to.", when: gradPrune),
            .value("grad_prune_rule", \.grad_prune_rule, flag: "grad-prune-rule",
                   "Threshold rule: calibrated (zeros = rate) or paper (rate of the fit below the threshold).",
                   when: gradPrune),
            .value("grad_prune_exempt_first", \.grad_prune_exempt_first, flag: nil,
                   "Leave the first conv/linear layer's gradient unpruned.", when: gradPrune),
            .value("grad_prune_exempt_last", \.grad_prune_exempt_last, flag: nil,
                   "Leave the last conv/linear layer's gradient unpruned.", when: gradPrune),
            ConfigOption(key: nil, flag: "grad-prune-exempt", valueName: "first|last|first,last", flagValue: nil,
                         help: "Layers exempt from gradient pruning (YAML: grad_prune_exempt_first/_last).",
                         defaultText: nil,
                         read: { c, v in
                             let parts = Set(try ConfigOption.scalar(v).split(separator: ",").map(String.init))
                             guard !parts.isEmpty, parts.isSubset(of: ["first", "last"]) else {
                                 throw ConfigValueError(detail: "expected first, last or first,last")
                             }
                             c.grad_prune_exempt_first = parts.contains("first")
                             c.grad_prune_exempt_last = parts.contains("last")
                         },
                         write: nil),
            .value("method", \.method, flag: "method",
                   "Training method: dense, clicktrain (patterns during training), pat (prune after training) or prunetrain (channel pruning)."),
            .value("num_patterns", \.num_patterns, flag: "num-patterns", "Patterns in the pool (K).", when: patterns),
            .value("pattern_weights", \.pattern_weights, flag: nil, "Weights kept per 3x3 kernel (n).", when: patterns),
            .value("pattern_pool", \.pattern_pool, flag: "pattern-pool",
                   "Pattern pool: dynamic (from importance) or generic (fixed lists).", when: patterns),
            .value("pool_scope", \.pool_scope, flag: "pool-scope",
                   "One pattern pool per layer or for the whole network.", when: patterns),
            .optional("epoch_choose_p_k", \.epoch_choose_p_k, flag: "choose-epoch", "Epochs before the pattern choice.",
                      default: "30% of the run", when: clicktrain),
            .optional("epoch_hard_prune_p_k", \.epoch_hard_prune_p_k, flag: "hard-prune-epoch",
                      "Epochs before hard pruning (PAT: before magnitude pruning).", default: "30% of the run",
                      when: patterns),
            .value("grp_lasso_coeff", \.grp_lasso_coeff, flag: "group-lasso", "Group-lasso coefficient λ.", when: clicktrain),
            ConfigOption(key: "prune_ratios", flag: nil, valueName: nil, flagValue: nil,
                         help: "Connectivity ratios in percent per layer, as in the official configs (YAML only).",
                         defaultText: "derived from compression",
                         read: { c, v in
                             // Every entry commented out, as published files often have it: no ratios.
                             if case .scalar(let s) = v, ["", "null", "~"].contains(s) { c.prune_ratios = nil; return }
                             guard case .map(let pairs) = v else { throw ConfigValueError(detail: "expected a mapping of layer: percent") }
                             var r: [String: Double] = [:]
                             for (k, s) in pairs {
                                 guard let x = Double(s) else { throw ConfigValueError(detail: "'\(k)': expected a percentage, got '\(s)'") }
                                 r[k] = x
                             }
                             c.prune_ratios = r
                         },
                         write: { c in
                             guard c.method.usesPatterns, let r = c.prune_ratios else { return nil }
                             return .map(r.keys.sorted().map { ($0, r[$0]!.configText) })
                         }),
            .value("compression", \.compression, flag: "compression",
                   "Target conv compression ratio, from which per-layer ratios are derived.",
                   when: { $0.method.usesPatterns && $0.prune_ratios == nil }),
            .value("importance_window", \.importance_window, flag: nil,
                   "Steps before the choice whose importance (W ⊙ G)² is accumulated.", when: clicktrain),
            .optional("prunetrain_interval", \.prunetrain_interval, flag: "prunetrain-interval",
                      "PruneTrain: epochs between channel removals.", default: "a fifth of the run", when: prunetrain),
            .value("prunetrain_threshold", \.prunetrain_threshold, flag: nil,
                   "PruneTrain: a channel whose weights all stay below this is removed.", when: prunetrain),
            .value("prunetrain_penalty_share", \.prunetrain_penalty_share, flag: "prunetrain-share",
                   "PruneTrain: share of the group-lasso penalty in the first step's loss, which sets λ.",
                   when: prunetrain),
        ]
    }

    /// Applies `settings` (key or flag, value) in order; `source` names them in errors.
    /// Milestones without a schedule of their own select the step schedule.
    mutating func apply(_ settings: [(ConfigOption, ConfigInput)], source: String, commandLine: Bool) throws {
        for (option, value) in settings {
            do { try option.read(&self, value) } catch let e as ConfigValueError {
                throw Invalid(source: source, detail: "\(option.name(commandLine: commandLine)): \(e.detail)")
            }
        }
        let keys = Set(settings.compactMap(\.0.key))
        if keys.contains("schedule") && !keys.contains("lr_schedule") { lr_schedule = .step }
    }

    /// Parses and validates YAML text; `source` names it in error messages. Keys clicktrain
    /// does not read are skipped (see `unusedKeys`). With `customModel` the `model` key
    /// only names the caller's own model.
    public static func decode(yaml text: String, source: String, customModel: Bool = false) throws -> RunConfig {
        let node: Node?
        do { node = try Yams.compose(yaml: text) } catch {
            throw Invalid(source: source, detail: "invalid YAML: \(error)")
        }
        var cfg = RunConfig()
        guard let node else { return cfg }
        guard let map = node.mapping else { throw Invalid(source: source, detail: "expected a mapping of keys to values") }
        let byKey = Dictionary(uniqueKeysWithValues: options.compactMap { o in o.key.map { ($0, o) } })
        let (entries, published) = flattened(map)
        var settings: [(ConfigOption, ConfigInput)] = []
        if published, let names = publishedNames(of: source) {
            // The file's name gives data set and model unless its keys do.
            if !entries.contains(where: { $0.0 == "dataset" }) {
                settings.append((byKey["dataset"]!, .scalar(names.dataset.rawValue)))
            }
            if !entries.contains(where: { $0.0 == "model" }) { settings.append((byKey["model"]!, .scalar(names.model))) }
        }
        for (key, v) in entries {
            guard let option = byKey[key] else { continue }
            var value = try input(v, key: key, source: source)
            // Published milestones are one string: '55 130'.
            if published, key == "schedule", case .scalar(let s) = value {
                value = .list(s.split(whereSeparator: { $0 == " " || $0 == "," }).map(String.init))
            }
            settings.append((option, value))
        }
        try cfg.apply(settings, source: source, commandLine: false)
        cfg.published = published
        try cfg.validate(source: source, customModel: customModel)
        return cfg
    }

    static func input(_ node: Node, key: String, source: String) throws -> ConfigInput {
        switch node {
        case .scalar(let s): return .scalar(s.string)
        case .sequence(let seq):
            return .list(try seq.map {
                guard let s = $0.string else { throw Invalid(source: source, detail: "\(key): expected a list of values") }
                return s
            })
        case .mapping(let m):
            return .map(try m.map { k, v in
                guard let ks = k.string, let vs = v.string else {
                    throw Invalid(source: source, detail: "\(key): expected a mapping of names to values")
                }
                return (ks, vs)
            })
        @unknown default: throw Invalid(source: source, detail: "\(key): unsupported YAML value")
        }
    }

    /// Top-level keys of a YAML config that clicktrain does not read (official ClickTrain
    /// configs carry keys for their own tooling; a misspelt key lands here too).
    public static func unusedKeys(yaml text: String) -> [String] {
        guard let node = try? Yams.compose(yaml: text), let map = node.mapping else { return [] }
        let known = Set(options.compactMap(\.key))
        return flattened(map).entries.map(\.0).filter { !known.contains($0) }.sorted()
    }

    /// `config.yaml`: the keys that apply to this run, as a person would write them.
    public func yaml() -> String {
        var out = ""
        for o in RunConfig.options {
            guard let key = o.key, let value = o.write?(self) else { continue }
            switch value {
            case .scalar(let s): out += "\(key): \(yamlScalar(s))\n"
            case .list(let l): out += "\(key): [\(l.map(yamlScalar).joined(separator: ", "))]\n"
            case .map(let m):
                out += m.isEmpty ? "\(key): {}\n" : "\(key):\n" + m.map { "  \(yamlScalar($0.0)): \(yamlScalar($0.1))\n" }.joined()
            }
        }
        return out
    }

    /// Settings from command-line words (`--epochs 3`, `--lr=0.05`, `--nesterov`): every
    /// option with a flag in `options`. Unknown words are an error naming them. Returns the
    /// YAML keys the words set.
    @discardableResult
    public mutating func applyCommandLine(_ words: [String]) throws -> Set<String> {
        let byFlag = Dictionary(uniqueKeysWithValues: RunConfig.options.compactMap { o in o.flag.map { ($0, o) } })
        var settings: [(ConfigOption, ConfigInput)] = []
        var i = 0
        while i < words.count {
            let word = words[i]
            guard word.hasPrefix("--") else {
                throw Invalid(source: "command line", detail: "unexpected argument '\(word)'")
            }
            var name = String(word.dropFirst(2)), inline: String?
            if let eq = name.firstIndex(of: "=") {
                inline = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            }
            guard let option = byFlag[name] else {
                throw Invalid(source: "command line", detail: "unknown option '--\(name)' (see clicktrain train --help)")
            }
            if let fixed = option.flagValue {
                guard inline == nil else { throw Invalid(source: "command line", detail: "--\(name) takes no value") }
                settings.append((option, .scalar(fixed)))
            } else if let v = inline {
                settings.append((option, .scalar(v)))
            } else {
                guard i + 1 < words.count else { throw Invalid(source: "command line", detail: "--\(name) needs a value") }
                i += 1
                settings.append((option, .scalar(words[i])))
            }
            i += 1
        }
        try apply(settings, source: "command line", commandLine: true)
        return Set(settings.compactMap(\.0.key))
    }

    /// The options' help, one entry per flag, for `clicktrain train --help`.
    public static var commandLineHelp: String {
        options.compactMap { o -> String? in
            guard let flag = o.flag else { return nil }
            let head = "  --\(flag)" + (o.valueName.map { " \($0)" } ?? "")
            let indent = String(repeating: " ", count: 30)
            // Lines under 80 columns, which the help prints as they are.
            var lines: [String] = [], line = ""
            for word in (o.help + (o.defaultText.map { " [default: \($0)]" } ?? "")).split(separator: " ") {
                if !line.isEmpty && line.count + 1 + word.count > 49 {
                    lines.append(line)
                    line = ""
                }
                line += (line.isEmpty ? "" : " ") + word
            }
            lines.append(line)
            let body = lines.map { indent + $0 }.joined(separator: "\n")
            return head.count < 30 ? head.padding(toLength: 30, withPad: " ", startingAt: 0) + body.dropFirst(30)
                : head + "\n" + body
        }.joined(separator: "\n")
    }
}

/// A YAML scalar as written: plain where YAML reads it back as the same text, quoted otherwise.
func yamlScalar(_ s: String) -> String {
    let plain = s.range(of: #"^[A-Za-z0-9_./+-][A-Za-z0-9_./+ -]*$"#, options: .regularExpression) != nil
        && !s.hasSuffix(" ")
        && !["null", "~", "yes", "no", "on", "off", "y", "n"].contains(s.lowercased())
    if plain { return s }
    let escaped = s.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
    return "\"\(escaped)\""
}
