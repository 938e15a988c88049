import ClickTrainCore
import ClickTrainData
import ClickTrainNN
import ClickTrainPruning
import ClickTrainSparse
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
}

public enum TrainingError: Error, CustomStringConvertible {
    case nonFiniteLoss(epoch: Int, step: Int, loss: Float, runDir: String, lastGoodEpoch: Int)
    case noCheckpoint(runDir: String)
    case badCheckpoint(path: String, detail: String)

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
        }
    }
}

/// Runs a `RunConfig`: epochs of training with the LR schedule, evaluation after each
/// epoch, `metrics.jsonl`, `model.safetensors` and a resumable checkpoint per epoch.
public final class Trainer {
    public let config: RunConfig
    public let runDir: String
    public let model: Sequential
    public private(set) var optimizer: SGD
    public let trainSet: ImageDataset
    public let testSet: ImageDataset
    public let input: ModelInput
    /// Activation-gradient pruning, when `grad_prune` > 0.
    public let gradientPruning: GradientPruningPolicy?
    /// Pattern pruning (ClickTrain or PAT).
    public let pruner: PatternPruner?
    /// Channel pruning (the PruneTrain baseline).
    public let prunetrain: PruneTrain?
    /// The unpruned architecture's cost: the reference for compression and FLOPs saved
    /// (PruneTrain changes the architecture itself).
    public let denseCost: ModelCost
    /// Epochs already completed (non-zero after a resume).
    public private(set) var completedEpochs = 0
    /// Where progress lines go (stdout by default).
    public var log: (String) -> Void = { FileHandle.standardOutput.write(Data(($0 + "\n").utf8)) }
    /// Show an in-epoch progress bar (default: when stdout is a terminal).
    public var showProgressBar = isatty(1) != 0
    private var elapsedBefore = 0.0

    public var checkpointPath: String { runDir + "/checkpoint/state.safetensors" }
    public var metricsPath: String { runDir + "/metrics.jsonl" }
    public var modelPath: String { runDir + "/model.safetensors" }

    /// A new run in `runDir` (created if needed; an existing checkpoint there is an error
    /// unless you resume, so earlier results are never overwritten by accident).
    public convenience init(config: RunConfig, runDir: String) throws {
        try config.validate(source: "configuration")
        if FileManager.default.fileExists(atPath: runDir + "/checkpoint/state.safetensors") {
            throw RunConfig.Invalid(source: runDir, detail: "this run folder already holds a run; use --resume \(runDir) to continue it or choose another --out")
        }
        try self.init(validated: config, runDir: runDir)
        try FileManager.default.createDirectory(atPath: runDir + "/checkpoint", withIntermediateDirectories: true)
        try atomicWrite(Data(try config.yaml().utf8), to: runDir + "/config.yaml")
        try atomicWrite(Data(), to: metricsPath)
    }

    private init(validated config: RunConfig, runDir: String) throws {
        self.config = config
        self.runDir = runDir
        Threads.set(config.threads ?? Threads.count)
        let kind = config.datasetKind
        trainSet = try ImageDataset.load(kind, directory: config.dataDirectory, train: true)
        testSet = try ImageDataset.load(kind, directory: config.dataDirectory, train: false)
        guard trainSet.height == trainSet.width else {
            throw RunConfig.Invalid(source: config.dataDirectory, detail: "images are \(trainSet.height)x\(trainSet.width); square images are expected")
        }
        input = ModelInput(channels: trainSet.channels, size: trainSet.height, classes: trainSet.classes)
        model = try ModelZoo.make(config.model, input: input, seed: config.seed)
        optimizer = SGD(parameters: model.parameters(), learningRate: config.learning_rate, momentum: config.momentum,
                        nesterov: config.nesterov, weightDecay: config.weight_decay,
                        decayBiasAndNorm: config.decay_bn_bias)
        if config.grad_prune > 0 {
            let pruner = GradientPruner(rate: config.grad_prune,
                                        distribution: GradientDistribution(rawValue: config.grad_prune_dist) ?? .gaussian,
                                        rule: ThresholdRule(rawValue: config.grad_prune_rule) ?? .calibrated,
                                        seed: config.seed)
            let policy = GradientPruningPolicy(pruner: pruner)
            policy.install(on: model, exemptFirst: config.grad_prune_exempt_first,
                           exemptLast: config.grad_prune_exempt_last)
            gradientPruning = policy
        } else {
            gradientPruning = nil
        }
        denseCost = ModelCost.measure(model, input: input)
        pruner = config.method == "prunetrain" ? nil : try Trainer.makePruner(config, model: model)
        prunetrain = config.method == "prunetrain"
            ? try PruneTrain(model: model, interval: config.prunetrain_interval ?? max(1, config.epochs / 5),
                             threshold: config.prunetrain_threshold, penaltyShare: config.prunetrain_penalty_share) : nil
    }

    static func makePruner(_ config: RunConfig, model: Sequential) throws -> PatternPruner? {
        guard config.method == "clicktrain" || config.method == "pat" else { return nil }
        let (prunable, other) = PatternPruner.prunableParameters(of: model)
        let ratios: [String: Double]
        if let raw = config.prune_ratios {
            ratios = try PruningRatios.fromOfficial(raw, prunable: prunable.map(\.name))
                .merging(Dictionary(uniqueKeysWithValues: prunable.map { ($0.name, 0.0) })) { a, _ in a }
        } else {
            ratios = try PruningRatios.fromTarget(config.compression, layers: prunable.map { ($0.name, $0.value.count) },
                                                  otherConvWeights: other, n: config.pattern_weights)
        }
        let d = PatternPruningConfig.defaultEpochs(totalEpochs: config.epochs)
        var pc = PatternPruningConfig(chooseEpoch: config.epoch_choose_p_k ?? d.choose,
                                      hardEpoch: config.epoch_hard_prune_p_k ?? d.hard, ratios: ratios)
        pc.method = config.method == "pat" ? .pat : .clicktrain
        pc.n = config.pattern_weights
        pc.poolSize = config.num_patterns
        pc.dynamicPool = config.pattern_pool == "dynamic"
        pc.poolScope = config.pool_scope == "network" ? .network : .layer
        pc.lambda = config.grp_lasso_coeff
        pc.importanceWindow = config.importance_window
        return try PatternPruner(model: model, config: pc)
    }

    /// Continues the run in `runDir` from its last checkpoint.
    public static func resume(runDir: String) throws -> Trainer {
        let path = runDir + "/checkpoint/state.safetensors"
        guard FileManager.default.fileExists(atPath: path) else { throw TrainingError.noCheckpoint(runDir: runDir) }
        let ck = try SafeTensors.read(path)
        guard let yaml = ck.metadata["config"], let epochText = ck.metadata["epoch"], let epoch = Int(epochText) else {
            throw TrainingError.badCheckpoint(path: path, detail: "metadata lacks 'config' or 'epoch'")
        }
        let cfg: RunConfig
        do { cfg = try RunConfig.decode(yaml: yaml, source: path) } catch {
            throw TrainingError.badCheckpoint(path: path, detail: "its config does not parse: \(error)")
        }
        let t = try Trainer(validated: cfg, runDir: runDir)
        if let pt = t.prunetrain {
            guard let json = ck.metadata["prunetrain"],
                  let st = try? JSONDecoder().decode(PruneTrainState.self, from: Data(json.utf8)) else {
                throw TrainingError.badCheckpoint(path: path, detail: "the run is PruneTrain but the checkpoint has no widths")
            }
            try PruneTrain.apply(widths: st.widths, to: t.model)
            pt.restore(widths: st.widths, lambda: st.lambda)
            t.rebuildOptimizer(keeping: [:])
        }
        try ModelState.load(ck.tensors, into: t.model, prefix: "model.", path: path, allowExtra: true)
        for (p, buf) in zip(t.optimizer.parameters, t.optimizer.momentumBuffers) {
            let key = "optimizer.momentum_buffer." + p.name
            guard case .f32(let shape, let vals)? = ck.tensors[key], shape == buf.shape else {
                throw TrainingError.badCheckpoint(path: path, detail: "momentum buffer '\(key)' is missing or has the wrong shape")
            }
            vals.withUnsafeBufferPointer { buf.data.update(from: $0.baseAddress!, count: buf.count) }
        }
        if let pr = t.pruner {
            guard let json = ck.metadata["pruning"], let st = try? JSONDecoder().decode(PruningState.self, from: Data(json.utf8)) else {
                throw TrainingError.badCheckpoint(path: path, detail: "the run prunes but the checkpoint has no pruning state")
            }
            var imp: [Tensor]? = nil
            if ck.tensors["importance." + pr.parameters[0].name] != nil {
                imp = try pr.parameters.map { p in
                    guard case .f32(let shape, let vals)? = ck.tensors["importance." + p.name], shape == p.shape else {
                        throw TrainingError.badCheckpoint(path: path, detail: "importance of '\(p.name)' missing or misshapen")
                    }
                    return Tensor(shape: shape, values: vals)
                }
            }
            try pr.restore(st, importance: imp)
        }
        t.completedEpochs = epoch
        t.elapsedBefore = Double(ck.metadata["elapsed_seconds"] ?? "0") ?? 0
        // Keep the metrics of the epochs the checkpoint covers (a killed run may have
        // written one more line than it checkpointed).
        let kept = t.readMetrics().filter { $0.epoch <= epoch }
        try atomicWrite(Data(kept.map { jsonLine($0) + "\n" }.joined().utf8), to: t.metricsPath)
        return t
    }

    public func readMetrics() -> [EpochMetrics] {
        guard let text = try? String(contentsOfFile: metricsPath, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { try? JSONDecoder().decode(EpochMetrics.self, from: Data($0.utf8)) }
    }

    var trainAugmentation: Augmentation {
        let kind = config.datasetKind
        let norm = kind.normalization
        let pad = config.crop_padding ?? (input.size <= 28 ? 2 : 4)
        return Augmentation(mean: norm.mean, std: norm.std, cropPadding: pad,
                            horizontalFlip: config.horizontal_flip ?? kind.flipByDefault)
    }

    /// Trains the remaining epochs (or up to `untilEpoch`); returns every epoch's metrics
    /// so far, including resumed ones.
    @discardableResult
    public func run(untilEpoch: Int? = nil) throws -> [EpochMetrics] {
        let lastEpoch = min(untilEpoch ?? config.epochs, config.epochs)
        let schedule = config.lrScheduleValue
        let grad = Tensor(shape: [config.batch_size, input.classes])
        let start = now()
        if completedEpochs == 0 {
            log("training \(ModelZoo.canonicalName(config.model)) on \(config.dataset) (\(trainSet.count) train / \(testSet.count) test images, \(input.channels)x\(input.size)x\(input.size)), \(config.epochs) epochs, batch \(config.batch_size), \(Threads.count) threads → \(runDir)")
        } else {
            log("resuming \(runDir) after epoch \(completedEpochs) of \(config.epochs)")
        }
        while completedEpochs < lastEpoch {
            let epoch = completedEpochs
            pruner?.beginEpoch(epoch)
            let phase = pruner?.phase(epoch: epoch) ?? (prunetrain != nil ? "prunetrain" : "dense")
            let loader = BatchLoader(dataset: trainSet, batchSize: config.batch_size, augmentation: trainAugmentation,
                                     shuffle: true, seed: config.seed, epoch: epoch, dropLast: true)
            let steps = config.max_steps_per_epoch > 0 ? min(loader.batchCount, config.max_steps_per_epoch) : loader.batchCount
            model.train(true)
            var lossSum = 0.0, correct = 0, seen = 0, backwardTime = 0.0
            gradientPruning?.resetStatistics()
            var lr: Float = config.learning_rate
            let t0 = now()
            var lastBar = 0.0
            for step in 0..<steps {
                guard let batch = loader.next() else { break }
                lr = schedule.rate(base: config.learning_rate, epoch: Double(epoch) + Double(step) / Double(steps),
                                   totalEpochs: config.epochs, warmupEpochs: config.warmup_epochs)
                optimizer.learningRate = lr
                let logits = model.forward(batch.images)
                let g = batch.count == config.batch_size ? grad : grad.firstRows(batch.count)
                let (loss, ok) = softmaxCrossEntropy(logits: logits, labels: batch.labels,
                                                     labelSmoothing: config.label_smoothing, grad: g)
                guard loss.isFinite else {
                    loader.cancel()
                    throw TrainingError.nonFiniteLoss(epoch: epoch + 1, step: step + 1, loss: loss, runDir: runDir,
                                                      lastGoodEpoch: completedEpochs)
                }
                gradientPruning?.beginStep(epoch: epoch, step: step)
                let tb = now()
                _ = model.backward(g)
                backwardTime += now() - tb
                pruner?.afterBackward(epoch: epoch, step: step, stepsPerEpoch: steps)
                pruner?.beforeOptimizerStep()
                prunetrain?.addGradient(model: model, loss: loss)
                optimizer.step()
                lossSum += Double(loss) * Double(batch.count)
                correct += ok
                seen += batch.count
                if showProgressBar, now() - lastBar > 0.25 || step == steps - 1 {
                    lastBar = now()
                    let rate = Double(seen) / (lastBar - t0)
                    let text = progressBar(step + 1, steps) + String(format: " %d/%d  loss %.4f  acc %.2f%%  %.0f img/s",
                        step + 1, steps, lossSum / Double(seen), 100 * Double(correct) / Double(seen), rate)
                    FileHandle.standardOutput.write(Data(("\r" + text + "\u{1B}[K").utf8))
                }
            }
            loader.cancel()
            let trainTime = now() - t0
            if showProgressBar { FileHandle.standardOutput.write(Data("\r\u{1B}[K".utf8)) }
            let (testLoss, testAcc) = evaluate()
            var m = EpochMetrics(epoch: epoch + 1, lr: Double(lr), train_loss: lossSum / Double(max(seen, 1)),
                                 train_acc: Double(correct) / Double(max(seen, 1)), test_loss: testLoss, test_acc: testAcc,
                                 images_per_s: Double(seen) / trainTime, seconds: now() - t0, phase: phase,
                                 backward_seconds: backwardTime)
            let cost = ModelCost.measure(model, input: input)  // before any rebuild: what this epoch ran
            let sparseNow = pruner?.state.hardPruned ?? false
            m.conv_compression = Double(denseCost.convWeights) / Double(max(cost.convNonZero, 1))
            m.inference_flops = cost.inferenceFLOPs
            m.dense_inference_flops = denseCost.denseInferenceFLOPs
            m.train_flops = Double(seen) * cost.trainingFLOPs(sparse: sparseNow)
            m.dense_train_flops = Double(seen) * denseCost.trainingFLOPs(sparse: false)
            if let gp = gradientPruning {
                m.grad_sparsity = Dictionary(uniqueKeysWithValues: gp.layerNames.map { ($0, gp.stats[$0]?.sparsity ?? 0) })
                m.grad_sparsity_conv_mean = gp.meanSparsity(of: convLayerNames)
            }
            var gradNote = m.grad_sparsity_conv_mean.map { String(format: "  grad sparsity %.1f%%", 100 * $0) } ?? ""
            completedEpochs += 1
            if let pt = prunetrain {
                let changed = pt.reconfigure(model: model, completedEpochs: completedEpochs)
                if !changed.isEmpty {
                    rebuildOptimizer(keeping: changed)
                    let after = ModelCost.measure(model, input: input)
                    gradNote += String(format: "  rebuilt %d blocks: %.2f MFLOPs per image", changed.count, after.inferenceFLOPs / 1e6)
                }
            }
            try appendMetrics(m)
            try saveCheckpoint(elapsed: elapsedBefore + now() - start)
            try saveModel()
            if pruner != nil || prunetrain != nil { gradNote += String(format: "  conv compression %.2fx", m.conv_compression ?? 1) }
            log(String(format: "epoch %3d/%d  lr %.4f  loss %.4f  acc %.2f%%  test loss %.4f  test acc %.2f%%  %.0f img/s  %.1f s  [%@]",
                       m.epoch, config.epochs, m.lr, m.train_loss, 100 * m.train_acc, m.test_loss, 100 * m.test_acc,
                       m.images_per_s, m.seconds, m.phase) + gradNote)
        }
        let all = readMetrics()
        if let last = all.last {
            log(String(format: "done: test accuracy %.2f%% after %d epochs, %.1f s in all; model in %@",
                       100 * last.test_acc, last.epoch, elapsedBefore + now() - start, modelPath))
            let tf = all.compactMap(\.train_flops).reduce(0, +), dtf = all.compactMap(\.dense_train_flops).reduce(0, +)
            if pruner != nil || prunetrain != nil, dtf > 0, let inf = last.inference_flops, let dinf = last.dense_inference_flops {
                log(String(format: "      conv compression %.2fx, training FLOPs saved %.1f%%, inference FLOPs saved %.1f%%",
                           last.conv_compression ?? 1, 100 * (1 - tf / dtf), 100 * (1 - inf / dinf)))
            }
            if pruner != nil { log("      time per phase: " + Trainer.phaseTimes(all)) }
        }
        return all
    }

    /// Epochs and seconds spent in each phase, in the order the phases came:
    /// "warm-up 3 epochs 412.0 s, regularised 4 epochs 560.3 s, pruned 3 epochs 371.9 s".
    public static func phaseTimes(_ metrics: [EpochMetrics]) -> String {
        var order: [String] = [], epochs: [String: Int] = [:], seconds: [String: Double] = [:]
        for m in metrics {
            if epochs[m.phase] == nil { order.append(m.phase) }
            epochs[m.phase, default: 0] += 1
            seconds[m.phase, default: 0] += m.seconds
        }
        return order.map { String(format: "%@ %d epoch%@ %.1f s", $0, epochs[$0]!, epochs[$0]! == 1 ? "" : "s", seconds[$0]!) }
            .joined(separator: ", ")
    }

    /// Names of the model's conv layers (module paths).
    var convLayerNames: [String] { model.namedModules().filter { $0.1 is Conv2d }.map(\.0) }

    /// Mean loss and accuracy on the test set (evaluation mode).
    public func evaluate() -> (loss: Double, accuracy: Double) {
        Trainer.evaluate(model: model, dataset: testSet, batchSize: config.batch_size,
                         augmentation: trainAugmentation.evaluation)
    }

    public static func evaluate(model: any Layer, dataset: ImageDataset, batchSize: Int, augmentation: Augmentation)
        -> (loss: Double, accuracy: Double)
    {
        model.train(false)
        defer { model.train(true) }
        let loader = BatchLoader(dataset: dataset, batchSize: batchSize, augmentation: augmentation, shuffle: false,
                                 seed: 0, epoch: 0, dropLast: false)
        var lossSum = 0.0, correct = 0, seen = 0
        while let b = loader.next() {
            let logits = model.forward(b.images)
            let (l, ok) = softmaxCrossEntropy(logits: logits, labels: b.labels, grad: nil)
            lossSum += Double(l) * Double(b.count)
            correct += ok
            seen += b.count
        }
        return (lossSum / Double(max(seen, 1)), Double(correct) / Double(max(seen, 1)))
    }

    func appendMetrics(_ m: EpochMetrics) throws {
        let h = try FileHandle(forWritingTo: URL(fileURLWithPath: metricsPath))
        defer { try? h.close() }
        try h.seekToEnd()
        try h.write(contentsOf: Data((jsonLine(m) + "\n").utf8))
        try h.synchronize()
    }

    /// Model, optimizer state, epoch and config in one atomically written file.
    func saveCheckpoint(elapsed: Double) throws {
        var tensors = ModelState.tensors(of: model, prefix: "model.")
        for (p, b) in zip(optimizer.parameters, optimizer.momentumBuffers) {
            tensors.append(("optimizer.momentum_buffer." + p.name, .f32(shape: b.shape, values: b.array)))
        }
        var meta = [
            "format": "clicktrain-checkpoint-1", "epoch": String(completedEpochs), "config": try config.yaml(),
            "elapsed_seconds": String(elapsed),
        ]
        if let pt = prunetrain {
            meta["prunetrain"] = String(decoding: try JSONEncoder().encode(PruneTrainState(widths: pt.widths, lambda: pt.lambda)), as: UTF8.self)
        }
        if let pr = pruner {
            meta["pruning"] = String(decoding: try JSONEncoder().encode(pr.state), as: UTF8.self)
            for (p, imp) in zip(pr.parameters, pr.importance ?? []) {
                tensors.append(("importance." + p.name, .f32(shape: imp.shape, values: imp.array)))
            }
            for p in pr.parameters {
                if let m = p.mask { tensors.append(("mask." + p.name, .f32(shape: m.shape, values: m.array))) }
            }
        }
        try SafeTensors.write(tensors, metadata: meta, to: checkpointPath)
    }

    /// The latest weights as a plain PyTorch-compatible `model.safetensors`.
    public func saveModel() throws {
        try SafeTensors.write(ModelState.tensors(of: model), metadata: modelMetadata(), to: modelPath)
        if let pr = pruner {
            let enc = JSONEncoder()
            enc.outputFormatting = [.sortedKeys]
            try atomicWrite(try enc.encode(pr.state), to: runDir + "/pruning.json")
        }
    }

    func modelMetadata() -> [String: String] {
        var m = ["format": "pt", "model": ModelZoo.canonicalName(config.model), "dataset": config.datasetKind.rawValue,
         "input": "\(input.channels)x\(input.size)x\(input.size)", "classes": String(input.classes),
         "epochs": String(completedEpochs)]
        if let pt = prunetrain {
            m["inner_widths"] = String(decoding: try! JSONEncoder().encode(pt.widths), as: UTF8.self)
        }
        return m
    }

    /// A new optimizer over the model's current parameters (after a PruneTrain rebuild),
    /// carrying momentum over by name; for shrunk blocks the kept channels' momentum.
    func rebuildOptimizer(keeping changed: [String: [Int]]) {
        var old: [String: Tensor] = [:]
        for (p, b) in zip(optimizer.parameters, optimizer.momentumBuffers) { old[p.name] = b }
        let o = optimizer
        let fresh = SGD(parameters: model.parameters(), learningRate: o.learningRate, momentum: o.momentum,
                        nesterov: o.nesterov, weightDecay: o.weightDecay, decayBiasAndNorm: o.decayBiasAndNorm)
        for (p, b) in zip(fresh.parameters, fresh.momentumBuffers) {
            guard var m = old[p.name] else { continue }
            if m.shape != b.shape, let (block, keep) = changed.first(where: { p.name.hasPrefix($0.key + ".") }) {
                let local = String(p.name.dropFirst(block.count + 1))
                m = m.keeping(axis: local.hasPrefix("conv2") ? 1 : 0, indices: keep)
            }
            if m.shape == b.shape { b.copy(from: m) }
        }
        optimizer = fresh
        gradientPruning?.install(on: model, exemptFirst: config.grad_prune_exempt_first,
                                 exemptLast: config.grad_prune_exempt_last)
    }
}

/// What a PruneTrain checkpoint needs besides the weights.
struct PruneTrainState: Codable {
    var widths: [String: Int]
    var lambda: Float?
}

func jsonLine<T: Encodable>(_ v: T) -> String {
    let e = JSONEncoder()
    e.outputFormatting = [.sortedKeys]
    return String(decoding: try! e.encode(v), as: UTF8.self)
}

func progressBar(_ done: Int, _ total: Int, width: Int = 24) -> String {
    let filled = total > 0 ? done * width / total : width
    return "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "]"
}

