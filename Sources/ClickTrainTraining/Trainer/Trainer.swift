import ClickTrainCore
import ClickTrainData
import ClickTrainNN
import ClickTrainPruning
import Foundation

/// Runs a `RunConfig`: epochs of training with the LR schedule and the configured training
/// methods, evaluation after each epoch, `metrics.jsonl`, `model.safetensors` and a
/// resumable checkpoint per epoch.
public final class Trainer {
    public let config: RunConfig
    public let runDir: String
    /// The network: a model-zoo model built from `config.model`, or the caller's own.
    public let model: any Layer
    /// The model's name in logs and saved files: the zoo's spelling, or a custom model's
    /// `config.model` as given.
    public let modelName: String
    public let trainSet: ImageDataset
    public let testSet: ImageDataset
    public let input: ModelInput
    /// The step every batch runs through, with the run's methods and optimizer.
    public let step: TrainingStep
    /// The unpruned architecture's cost: the reference for compression and FLOPs saved
    /// (a method may change the architecture itself).
    public let denseCost: ModelCost
    /// Epochs already completed (non-zero after a resume).
    public internal(set) var completedEpochs = 0
    /// Where progress lines go (stdout by default).
    public var log: (String) -> Void = { FileHandle.standardOutput.write(Data(($0 + "\n").utf8)) }
    /// Show an in-epoch progress bar (default: when stdout is a terminal).
    public var showProgressBar = isatty(1) != 0
    var elapsedBefore = 0.0
    /// Held while this trainer may write the run folder.
    var lock: RunLock?
    /// Notes printed when the run starts (e.g. about its starting weights).
    public internal(set) var startNotes: [String] = []
    /// Called after each epoch's checkpoint is saved, with the epochs it covers.
    public var onCheckpoint: ((Int) -> Void)?
    /// The ranks training together (data parallelism), or nil for one process.
    public let group: (any ProcessGroup)?
    /// Whether this process writes the run folder (rank 0 alone does).
    public var writesFiles: Bool { (group?.rank ?? 0) == 0 }
    /// Images of each batch this process trains on.
    var localBatchSize: Int { config.batch_size / (group?.size ?? 1) }

    public var optimizer: SGD { step.optimizer }
    /// The run's training methods, in the order their hooks run.
    public var methods: [any TrainingMethod] { step.methods }
    /// The first method of type `T`, if the run has one.
    public func method<T: TrainingMethod>(_ type: T.Type) -> T? { methods.lazy.compactMap { $0 as? T }.first }

    public var checkpointPath: String { runDir + "/checkpoint/state.safetensors" }
    public var metricsPath: String { runDir + "/metrics.jsonl" }
    public var modelPath: String { runDir + "/model.safetensors" }

    /// A new run in `runDir` (created if needed; an existing checkpoint there is an error
    /// unless you resume, so earlier results are never overwritten by accident). With a
    /// `group` of several ranks, every rank makes its trainer; rank 0 alone writes the folder.
    /// `device`, when given, makes the step device from the new trainer (`use(device:)`)
    /// before the run folder is created, so a device that cannot take the model leaves none.
    public convenience init(config: RunConfig, runDir: String, group: (any ProcessGroup)? = nil,
                            device: ((Trainer) throws -> any StepDevice)? = nil) throws {
        try self.init(config: config, runDir: runDir, group: group, custom: nil, device: device)
    }

    /// A new run of your own `model` (any tree of layers; `config.model` names it in the
    /// run's files). It receives [N, C, H, W] batches of the configured data set and must
    /// return [N, classes] logits. ClickTrain and PAT prune every 3x3 `Conv2d` but the first;
    /// layers they cannot prune are listed in `startNotes` and left dense.
    public convenience init(model: any Layer, config: RunConfig, runDir: String,
                            group: (any ProcessGroup)? = nil) throws {
        try self.init(config: config, runDir: runDir, group: group, custom: model, device: nil)
    }

    private convenience init(config: RunConfig, runDir: String, group: (any ProcessGroup)?, custom: (any Layer)?,
                             device: ((Trainer) throws -> any StepDevice)?) throws {
        try config.validate(source: "configuration", customModel: custom != nil)
        let checkpoint = runDir + "/checkpoint/state.safetensors"
        let writes = (group?.rank ?? 0) == 0
        if writes, FileManager.default.fileExists(atPath: checkpoint) {
            throw RunConfig.Invalid(source: runDir, detail: "this run folder already holds a run; use --resume \(runDir) to continue it or choose another --out")
        }
        try self.init(validated: config, runDir: runDir, group: group, model: custom)
        if !config.init_weights.isEmpty { startNotes += try ModelState.initialize(model, from: config.init_weights) }
        if let device { try use(device: device(self)) }
        guard writes else { return }
        try FileManager.default.createDirectory(atPath: runDir + "/checkpoint", withIntermediateDirectories: true)
        lock = try RunLock(runDir: runDir)
        RunLock.removeLeftovers(in: runDir)
        // Checked again under the lock: a run started meanwhile may have saved its first epoch.
        if FileManager.default.fileExists(atPath: checkpoint) {
            throw RunConfig.Invalid(source: runDir, detail: "this run folder already holds a run; use --resume \(runDir) to continue it or choose another --out")
        }
        try atomicWrite(Data(self.config.yaml().utf8), to: runDir + "/config.yaml")
        try atomicWrite(Data(), to: metricsPath)
    }

    init(validated given: RunConfig, runDir: String, group: (any ProcessGroup)?, model custom: (any Layer)? = nil) throws {
        var config = given
        self.runDir = runDir
        self.group = group
        // Ranks on one machine share its cores (and a launcher may bind each to fewer).
        var bindingNote: String?
        if let group, config.threads == nil {
            let share = max(1, ProcessInfo.processInfo.activeProcessorCount / group.localSize)
            let allowed = Threads.allowedCores
            if allowed < share {
                bindingNote = "mpirun bound each rank to \(allowed) core\(allowed == 1 ? "" : "s") of the \(share) it could use; start it with --bind-to none (or --map-by slot:PE=\(share)) for \(share) threads per rank"
            }
            Threads.set(min(allowed, share))
        } else {
            Threads.set(config.threads ?? Threads.count)
        }
        if let group, config.batch_size % group.size != 0 {
            throw RunConfig.Invalid(source: "batch_size", detail: "the global batch of \(config.batch_size) images does not split evenly over \(group.size) ranks; choose a multiple of \(group.size)")
        }
        trainSet = try ImageDataset.load(config.dataset, directory: config.dataDirectory, train: true)
        testSet = try ImageDataset.load(config.dataset, directory: config.dataDirectory, train: false)
        guard trainSet.height == trainSet.width else {
            throw RunConfig.Invalid(source: config.dataDirectory, detail: "images are \(trainSet.height)x\(trainSet.width); square images are expected")
        }
        guard config.batch_size <= trainSet.count else {
            throw RunConfig.Invalid(source: config.dataDirectory, detail: "batch_size \(config.batch_size) is larger than the training set's \(trainSet.count) images")
        }
        input = ModelInput(channels: trainSet.channels, size: trainSet.height, classes: trainSet.classes)
        if let custom {
            custom.assignNames()
            custom.train(true)
            try Trainer.checkCustomModel(custom, input: input, source: config.model)
            model = custom
            modelName = config.model
        } else {
            model = try ModelZoo.make(config.model, input: input, seed: config.seed)
            modelName = ModelZoo.canonicalName(config.model)
        }
        var notes: [String] = bindingNote.map { [$0] } ?? []
        if config.published, config.method.usesPatterns, config.prune_ratios != nil {
            let (ratios, skipped) = config.publishedRatios(for: model)
            config.prune_ratios = ratios.isEmpty ? nil : ratios  // none fits: ratios from compression
            if !skipped.isEmpty {
                notes.append("skipping prune_ratios for layers \(config.model) does not have: \(skipped.joined(separator: ", "))")
            }
        }
        config.published = false  // its ratios now fit the model: from here on a flat config
        config = config.resolvingDefaults()
        self.config = config
        denseCost = ModelCost.measure(model, input: input)
        let optimizer = SGD(parameters: model.parameters(), learningRate: config.learning_rate, momentum: config.momentum,
                            nesterov: config.nesterov, weightDecay: config.weight_decay,
                            decayBiasAndNorm: config.decay_bn_bias)
        var methods = try config.makeMethods(for: model)
        if let group, group.size > 1 {  // first: every other method sees the averaged gradients
            methods.insert(DataParallel(group: group, model: model, syncBatchNorm: config.sync_bn), at: 0)
        }
        if config.method != .dense || config.grad_prune > 0 {
            let unknown = PatternPruner.unknownWeightedLayers(of: model)
            if !unknown.isEmpty {
                notes.append("the pruning methods do not know \(unknown.count == 1 ? "this layer" : "these layers") and leave \(unknown.count == 1 ? "it" : "them") dense: \(unknown.joined(separator: ", "))")
            }
        }
        step = TrainingStep(model: model, optimizer: optimizer, methods: methods,
                            batchSize: config.batch_size / (group?.size ?? 1), classes: input.classes, labelSmoothing: config.label_smoothing)
        step.group = group
        startNotes = notes
    }

    /// A custom model must take the data set's images and return one logit per class.
    static func checkCustomModel(_ model: any Layer, input: ModelInput, source: String) throws {
        guard !model.parameters().isEmpty else {
            throw RunConfig.Invalid(source: source, detail: "the model has no parameters to train")
        }
        let out = model.outputShape(for: [1, input.channels, input.size, input.size])
        guard out == [1, input.classes] else {
            throw RunConfig.Invalid(source: source, detail: "the model maps [1, \(input.channels), \(input.size), \(input.size)] images to \(out); [1, \(input.classes)] logits are expected")
        }
    }

    public func readMetrics() -> [EpochMetrics] {
        guard let text = try? String(contentsOfFile: metricsPath, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { try? JSONDecoder().decode(EpochMetrics.self, from: Data($0.utf8)) }
    }

    var trainAugmentation: Augmentation { config.augmentation(for: trainSet) }

    var prunes: Bool { methods.contains { $0.prunesWeights } }

    /// Trains the remaining epochs (or up to `untilEpoch`); returns every epoch's metrics
    /// so far, including resumed ones.
    @discardableResult
    public func run(untilEpoch: Int? = nil) throws -> [EpochMetrics] {
        let lastEpoch = min(untilEpoch ?? config.epochs, config.epochs)
        let start = now()
        if completedEpochs == 0 {
            let threads = Threads.count == 1 ? "1 thread" : "\(Threads.count) threads"
            let ranks = (group?.size ?? 1) > 1 ? "\(group!.size) ranks x \(threads)" : threads
            log("training \(modelName) on \(config.dataset.rawValue) (\(trainSet.count) train / \(testSet.count) test images, \(input.channels)x\(input.size)x\(input.size)), \(config.epochs) epochs, batch \(config.batch_size), \(ranks) → \(runDir)")
        } else {
            log("resuming \(runDir) after epoch \(completedEpochs) of \(config.epochs)")
        }
        for note in startNotes { log("note: " + note) }
        startNotes = []
        while completedEpochs < lastEpoch {
            var m = try trainEpoch()
            var note = methods.map { $0.addMetrics(to: &m) }.joined()
            completedEpochs += 1
            let endStarted = now()
            for method in methods {
                guard let change = method.epochEnd(completedEpochs: completedEpochs) else { continue }
                modelChanged(change)
                let after = ModelCost.measure(model, input: input)
                note += String(format: "  %@: %.2f MFLOPs per image", change.summary, after.inferenceFLOPs / 1e6)
            }
            try checkRanksAgree()
            m.seconds += now() - endStarted  // the methods' own work belongs to the epoch
            if !writesFiles {
                onCheckpoint?(completedEpochs)
                continue
            }
            do {
                // The checkpoint last: once it is there, every file of the epoch is.
                try appendMetrics(m)
                try saveModel()
                try saveCheckpoint(elapsed: elapsedBefore + now() - start)
                onCheckpoint?(completedEpochs)
            } catch {
                throw TrainingError.notSaved(epoch: completedEpochs, detail: "\(error)", runDir: runDir)
            }
            if prunes { note += String(format: "  conv compression %.2fx", m.conv_compression ?? 1) }
            log(String(format: "epoch %3d/%d  lr %.4f  loss %.4f  acc %.2f%%  test loss %.4f  test acc %.2f%%  %.0f img/s  %.1f s  [%@]",
                       m.epoch, config.epochs, m.lr, m.train_loss, 100 * m.train_acc, m.test_loss, 100 * m.test_acc,
                       m.images_per_s, m.seconds, m.phase) + note)
        }
        let all = readMetrics()
        if let last = all.last {
            log(String(format: "done: test accuracy %.2f%% after %d epochs, %.1f s in all; model in %@",
                       100 * last.test_acc, last.epoch, elapsedBefore + now() - start, modelPath))
            let tf = all.compactMap(\.train_flops).reduce(0, +), dtf = all.compactMap(\.dense_train_flops).reduce(0, +)
            if prunes, dtf > 0, let inf = last.inference_flops, let dinf = last.dense_inference_flops {
                log(String(format: "      conv compression %.2fx, training FLOPs saved %.1f%%, inference FLOPs saved %.1f%%",
                           last.conv_compression ?? 1, 100 * (1 - tf / dtf), 100 * (1 - inf / dinf)))
            }
            if Set(all.map(\.phase)).count > 1 { log("      time per phase: " + Trainer.phaseTimes(all)) }
        }
        return all
    }

    /// The next epoch's steps and evaluation: its metrics, before the methods add theirs.
    func trainEpoch() throws -> EpochMetrics {
        let epoch = completedEpochs
        let epochStarted = now()  // the epoch's seconds include the methods' work (choice, hard pruning)
        for method in methods { try method.epochStart(epoch: epoch) }
        if !methods.isEmpty { try step.device?.upload() }  // e.g. hard pruning's masks and zeros
        let phase = methods.lazy.compactMap { $0.phase(epoch: epoch) }.first ?? "dense"
        let loader = BatchLoader(dataset: trainSet, batchSize: config.batch_size, augmentation: trainAugmentation,
                                 shuffle: true, seed: config.seed, epoch: epoch, dropLast: true,
                                 shard: group?.rank ?? 0, shards: group?.size ?? 1)
        defer { loader.cancel() }
        let steps = config.max_steps_per_epoch > 0 ? min(loader.batchCount, config.max_steps_per_epoch) : loader.batchCount
        let schedule = config.lrScheduleValue
        model.train(true)
        var lossSum = 0.0, correct = 0, seen = 0, backwardTime = 0.0
        var lr: Float = config.learning_rate
        let t0 = now()
        var lastBar = 0.0
        for i in 0..<steps {
            guard let batch = loader.next() else { break }
            lr = schedule.rate(base: config.learning_rate, epoch: Double(epoch) + Double(i) / Double(steps),
                               totalEpochs: config.epochs, warmupEpochs: config.warmup_epochs)
            step.optimizer.learningRate = lr
            let r: TrainingStep.Result
            do {
                r = try step.run(images: batch.images, labels: batch.labels,
                                 info: StepInfo(epoch: epoch, step: i, stepsPerEpoch: steps))
            } catch let e as TrainingStep.NonFiniteLoss {
                throw TrainingError.nonFiniteLoss(epoch: epoch + 1, step: i + 1, loss: e.loss, runDir: runDir,
                                                  lastGoodEpoch: completedEpochs)
            }
            backwardTime += r.backwardSeconds
            lossSum += Double(r.loss) * Double(batch.count)
            correct += r.correct
            seen += batch.count
            if showProgressBar, now() - lastBar > 0.25 || i == steps - 1 {
                lastBar = now()
                let rate = Double(seen * (group?.size ?? 1)) / (lastBar - t0)
                let text = progressBar(i + 1, steps) + String(format: " %d/%d  loss %.4f  acc %.2f%%  %.0f img/s",
                    i + 1, steps, lossSum / Double(seen), 100 * Double(correct) / Double(seen), rate)
                FileHandle.standardOutput.write(Data(("\r" + text + "\u{1B}[K").utf8))
            }
        }
        loader.cancel()
        try step.device?.download()
        let trainTime = now() - t0
        if showProgressBar { FileHandle.standardOutput.write(Data("\r\u{1B}[K".utf8)) }
        if let group, group.size > 1 {
            // The whole batch's figures, and rank 0's running statistics everywhere (with
            // local batch norm each rank has its own), so every rank evaluates one model.
            // (Each step's loss is already the whole batch's: its sum over the ranks, weighted
            // by their equal shares, is that loss times the whole batch.)
            let total = group.sum([lossSum, Double(correct), Double(seen)])
            (lossSum, correct, seen) = (total[0], Int(total[1]), Int(total[2]))
            for case let (_, .buffer(t)) in model.stateDict() { group.broadcast(t) }
        }
        let (testLoss, testAcc) = try evaluate()
        guard testLoss.isFinite else {  // the last steps broke the weights
            throw TrainingError.nonFiniteLoss(epoch: epoch + 1, step: steps, loss: Float(testLoss), runDir: runDir,
                                              lastGoodEpoch: completedEpochs)
        }
        var m = EpochMetrics(epoch: epoch + 1, lr: Double(lr), train_loss: lossSum / Double(max(seen, 1)),
                             train_acc: Double(correct) / Double(max(seen, 1)), test_loss: testLoss, test_acc: testAcc,
                             images_per_s: Double(seen) / trainTime, seconds: now() - epochStarted, phase: phase,
                             backward_seconds: step.device == nil ? backwardTime : nil)
        let cost = ModelCost.measure(model, input: input)  // before any rebuild: what this epoch ran
        m.conv_compression = Double(denseCost.convWeights) / Double(max(cost.convNonZero, 1))
        m.inference_flops = cost.inferenceFLOPs
        m.dense_inference_flops = denseCost.denseInferenceFLOPs
        m.train_flops = Double(seen) * cost.trainingFLOPs(sparse: methods.contains { $0.trainsSparse })
        m.dense_train_flops = Double(seen) * denseCost.trainingFLOPs(sparse: false)
        return m
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

    /// Mean loss and accuracy on the test set (evaluation mode; each rank of a group
    /// evaluates its share).
    public func evaluate() throws -> (loss: Double, accuracy: Double) {
        if let device = step.device {
            return try Trainer.evaluate(on: device, dataset: testSet, batchSize: config.batch_size,
                                        augmentation: trainAugmentation)
        }
        return Trainer.evaluate(model: model, dataset: testSet, batchSize: config.batch_size,
                                augmentation: trainAugmentation, group: group)
    }

    /// Runs every later step and evaluation on `device` (made from this trainer's model and
    /// optimizer). The pattern methods (ClickTrain, PAT) run their hooks on the CPU between
    /// the device's backward and update; PruneTrain (which rebuilds the model), gradient
    /// pruning (inside the backward kernels) and data parallelism need the CPU.
    public func use(device: any StepDevice) throws {
        if let m = methods.first(where: { !($0 is PatternPruningMethod) }) {
            throw TrainingError.unsupportedOnDevice("\(type(of: m)) (it runs inside the CPU's step; use --device cpu)")
        }
        if let group, group.size > 1 { throw TrainingError.unsupportedOnDevice("data parallelism over MPI") }
        try device.upload()
        step.device = device
    }

    /// `evaluate(model:…)` on a step device.
    public static func evaluate(on device: any StepDevice, dataset: ImageDataset, batchSize: Int,
                                augmentation: Augmentation) throws -> (loss: Double, accuracy: Double) {
        try evaluate(dataset: dataset, batchSize: batchSize, augmentation: augmentation, group: nil) {
            try device.evaluate(images: $0.images, labels: $0.labels)
        }
    }

    /// Mean loss and accuracy of `model` on `dataset` in evaluation mode. Only the
    /// normalisation of `augmentation` applies (no crops or flips), so the training
    /// augmentation (`RunConfig.augmentation(for:)`) can be passed as it is.
    public static func evaluate(model: any Layer, dataset: ImageDataset, batchSize: Int, augmentation: Augmentation,
                                group: (any ProcessGroup)? = nil) -> (loss: Double, accuracy: Double)
    {
        model.train(false)
        defer { model.train(true) }
        return evaluate(dataset: dataset, batchSize: batchSize, augmentation: augmentation, group: group) { b in
            let (l, ok) = softmaxCrossEntropy(logits: model.forward(b.images), labels: b.labels, grad: nil)
            return (Double(l) * Double(b.count), ok)
        }
    }

    /// The test-set loop both evaluations share: `batch` gives a batch's summed loss and
    /// correct images; with a group, the ranks' shares are summed.
    static func evaluate(dataset: ImageDataset, batchSize: Int, augmentation: Augmentation, group: (any ProcessGroup)?,
                         batch: (Batch) throws -> (lossSum: Double, correct: Int)) rethrows
        -> (loss: Double, accuracy: Double)
    {
        let loader = BatchLoader(dataset: dataset, batchSize: batchSize, augmentation: augmentation.evaluation, shuffle: false,
                                 seed: 0, epoch: 0, dropLast: false, shard: group?.rank ?? 0, shards: group?.size ?? 1)
        var lossSum = 0.0, correct = 0, seen = 0
        while let b = loader.next() {
            guard b.count > 0 else { continue }
            let r = try batch(b)
            lossSum += r.lossSum
            correct += r.correct
            seen += b.count
        }
        if let group, group.size > 1 {
            let total = group.sum([lossSum, Double(correct), Double(seen)])
            (lossSum, correct, seen) = (total[0], Int(total[1]), Int(total[2]))
        }
        return (lossSum / Double(max(seen, 1)), Double(correct) / Double(max(seen, 1)))
    }

    /// A method reshaped the model: a new optimizer over its parameters, carrying
    /// momentum over by name (sliced where a parameter lost channels), and every method
    /// re-attached.
    func modelChanged(_ change: ModelChange) {
        var old: [String: Tensor] = [:]
        for (p, b) in zip(optimizer.parameters, optimizer.momentumBuffers) { old[p.name] = b }
        let o = optimizer
        let fresh = SGD(parameters: model.parameters(), learningRate: o.learningRate, momentum: o.momentum,
                        nesterov: o.nesterov, weightDecay: o.weightDecay, decayBiasAndNorm: o.decayBiasAndNorm)
        for (p, b) in zip(fresh.parameters, fresh.momentumBuffers) {
            guard var m = old[p.name] else { continue }
            if m.shape != b.shape, let s = change.slices[p.name] { m = m.keeping(axis: s.axis, indices: s.indices) }
            if m.shape == b.shape { b.copy(from: m) }
        }
        step.optimizer = fresh
        for method in methods { method.modelDidChange() }
    }
}

func progressBar(_ done: Int, _ total: Int, width: Int = 24) -> String {
    let filled = total > 0 ? done * width / total : width
    return "[" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled) + "]"
}

/// An exclusive lock on a run folder (a POSIX record lock on its `.lock` file), so two
/// processes never train into one folder. The system drops it when the process ends,
/// however it ends, so a crashed run leaves nothing stuck.
final class RunLock {
    let fd: Int32

    /// Temporary files of atomic writes that a killed process left (`.NAME.tmp-PID`): only
    /// the lock holder may remove them.
    static func removeLeftovers(in runDir: String) {
        for dir in [runDir, runDir + "/checkpoint"] {
            for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
            where name.hasPrefix(".") && name.contains(".tmp-") {
                unlink(dir + "/" + name)
            }
        }
    }

    init(runDir: String) throws {
        fd = open(runDir + "/.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FileWriteError(path: runDir + "/.lock", code: errno) }
        guard lockf(fd, F_TLOCK, 0) == 0 else {
            let e = errno
            close(fd)
            if e == EACCES || e == EAGAIN { throw TrainingError.folderInUse(runDir: runDir) }
            throw RunConfig.Invalid(source: runDir, detail: "cannot lock the run folder: \(String(cString: strerror(e)))")
        }
    }

    deinit { close(fd) }
}
