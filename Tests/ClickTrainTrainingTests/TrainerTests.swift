import ClickTrainCore
import ClickTrainData
import ClickTrainNN
import ClickTrainPruning
import ClickTrainTestSupport
import ClickTrainTraining
import Foundation
import Testing

/// A tiny but real data set folder (16x16 IDX files) and a config that trains on it fast.
func tinyRun(epochs: Int = 3, model: String = "lenet5") -> (RunConfig, String) {
    let data = SyntheticData.temporaryDirectory("data")
    SyntheticData.writeIDXFolder(data, train: 384, test: 128, size: 16) { try! IDX.write($0, dims: $1, bytes: $2) }
    var c = RunConfig()
    c.model = model
    c.dataset = .fashionMNIST
    c.data = data
    c.epochs = epochs
    c.batch_size = 32
    c.learning_rate = 0.05
    c.crop_padding = 0  // the classes differ by where a square sits: no shifting
    c.threads = 2
    c.seed = 5
    return (c, SyntheticData.temporaryDirectory("run"))
}

/// `tinyRun` on ResNet-20 with `method`, three steps of 16 images per epoch.
func shortResNetRun(epochs: Int, method: MethodKind = .dense) -> (RunConfig, String) {
    var (c, dir) = tinyRun(epochs: epochs, model: "resnet20")
    c.method = method
    c.max_steps_per_epoch = 3
    c.batch_size = 16
    return (c, dir)
}

func weights(_ t: Trainer) -> [Float] { t.model.parameters().flatMap { $0.value.array } }

func quiet(_ t: Trainer) -> Trainer {
    t.log = { _ in }
    t.showProgressBar = false
    return t
}

/// Metrics without the wall-clock fields.
func comparable(_ m: [EpochMetrics]) -> [[Double]] {
    m.map { [Double($0.epoch), $0.lr, $0.train_loss, $0.train_acc, $0.test_loss, $0.test_acc] }
}

@Suite("Trainer, checkpoints and resume", .serialized)
struct TrainerTests {
    @Test func learnsAndIsReproducible() throws {
        var (cfg, dir1) = tinyRun(epochs: 5)
        cfg.learning_rate = 0.1
        let m1 = try quiet(Trainer(config: cfg, runDir: dir1)).run()
        let m2 = try quiet(Trainer(config: cfg, runDir: SyntheticData.temporaryDirectory("run"))).run()
        #expect(comparable(m1) == comparable(m2))
        #expect(m1.count == 5)
        #expect(m1.last!.test_acc > 0.8, "\(m1)")
        for f in ["config.yaml", "metrics.jsonl", "model.safetensors", "checkpoint/state.safetensors"] {
            #expect(FileManager.default.fileExists(atPath: dir1 + "/" + f), "\(f)")
        }
        // model.safetensors loads into a fresh model with the same test accuracy.
        let saved = try SafeTensors.read(dir1 + "/model.safetensors")
        #expect(saved.metadata["model"] == "lenet5" && saved.metadata["input"] == "1x16x16")
        let net = try ModelZoo.make("lenet5", input: ModelInput(channels: 1, size: 16, classes: 10), seed: 99)
        try ModelState.load(saved.tensors, into: net, path: "model")
        let test = try ImageDataset.load(.fashionMNIST, directory: cfg.data, train: false)
        let norm = DatasetKind.fashionMNIST.normalization
        let (_, acc) = Trainer.evaluate(model: net, dataset: test, batchSize: 32,
                                        augmentation: Augmentation(mean: norm.mean, std: norm.std))
        #expect(abs(acc - m1.last!.test_acc) < 1e-9)
    }

    @Test(arguments: [0.0, 0.9])
    func resumeEndsExactlyLikeAnUninterruptedRun(_ gradPrune: Double) throws {
        var (c, dirA) = shortResNetRun(epochs: 3)
        c.grad_prune = gradPrune
        let full = try quiet(Trainer(config: c, runDir: dirA))
        let mFull = try full.run()

        let dirB = SyntheticData.temporaryDirectory("run")
        var short = c
        short.epochs = 3
        let first = quiet(try Trainer(config: short, runDir: dirB))
        try first.run(untilEpoch: 1)
        let resumed = quiet(try Trainer.resume(runDir: dirB))
        #expect(resumed.completedEpochs == 1)
        let mRes = try resumed.run()
        #expect(comparable(mRes) == comparable(mFull))
        #expect(weights(resumed) == weights(full))
        if gradPrune > 0 {
            // The measured sparsity of the pruned gradients is reported and near the target.
            let s = try #require(mFull.last?.grad_sparsity_conv_mean)
            #expect(abs(s - gradPrune) < 0.03, "conv gradient sparsity \(s)")
            #expect(mFull.last?.grad_sparsity?["layer3.2.conv2"] != nil)
            #expect(mFull.last?.grad_sparsity?["fc"] != nil)
        } else {
            #expect(mFull.last?.grad_sparsity == nil)
        }
        #expect((mFull.last?.backward_seconds ?? 0) > 0)
    }

    /// ClickTrain through the trainer: stages by epoch, masks enforced after hard pruning,
    /// kept in the checkpoint and re-attached on resume, with the same end as one run.
    @Test(arguments: [1, 3])
    func clickTrainMasksSurviveCheckpointAndResume(_ stopAfter: Int) throws {
        var (cfg, dirA) = shortResNetRun(epochs: 4, method: .clicktrain)
        cfg.epoch_choose_p_k = 1
        cfg.epoch_hard_prune_p_k = 2
        // Official-style ratios (percent, `module.` prefix) for two layers; others keep all kernels.
        cfg.prune_ratios = ["module.layer1.0.conv1.weight": 50, "module.layer3.2.conv2.weight": 75]
        let full = quiet(try Trainer(config: cfg, runDir: dirA))
        let mFull = try full.run()
        #expect(mFull.map(\.phase) == ["warm-up", "regularised", "pruned", "pruned"])
        let pr = try #require(full.method(ClickTrainMethod.self)?.pruner)
        // Epochs left to their defaults are written out as used: 30% of the run, at least one.
        var unset = cfg
        unset.epoch_choose_p_k = nil
        unset.epoch_hard_prune_p_k = nil
        let resolved = try Trainer(config: unset, runDir: SyntheticData.temporaryDirectory("run")).config
        #expect(resolved.epoch_choose_p_k == 1 && resolved.epoch_hard_prune_p_k == 1)
        let ten = PatternPruningConfig.defaultEpochs(totalEpochs: 10)
        #expect(ten.choose == 3 && ten.hard == 3)
        let l = try #require(pr.state.layers.first { $0.name == "layer3.2.conv2.weight" })
        #expect(l.kernels - l.keptKernels == l.kernels * 3 / 4)
        #expect(pr.state.layers.first { $0.name == "layer2.0.conv1.weight" }!.keptKernels == 32 * 16)
        for (p, layer) in zip(pr.parameters, pr.state.layers) {
            let m = layer.mask()
            #expect((0..<m.count).allSatisfy { m[$0] != 0 || p.value[$0] == 0 }, "\(p.name) has weights outside its mask")
        }
        #expect((mFull.last?.conv_compression ?? 0) > 2.2)

        let dirB = SyntheticData.temporaryDirectory("run")
        try quiet(Trainer(config: cfg, runDir: dirB)).run(untilEpoch: stopAfter)
        let resumed = quiet(try Trainer.resume(runDir: dirB))
        // Stopped after the warm-up: the importance window must come back from the checkpoint.
        let resumedPruner = resumed.method(ClickTrainMethod.self)?.pruner
        #expect(resumedPruner?.importance != nil || stopAfter > 1)
        #expect(resumedPruner?.state.hardPruned == (stopAfter >= 2))
        #expect(resumedPruner?.parameters.allSatisfy { $0.mask != nil } == (stopAfter >= 2))
        let mRes = try resumed.run()
        #expect(comparable(mRes) == comparable(mFull))
        #expect(weights(resumed) == weights(full))
        let saved = try SavedModel(path: dirB + "/model.safetensors")
        #expect(saved.pruning == resumedPruner?.state)
    }

    /// PruneTrain's rebuild through the trainer: a threshold that kills every channel makes
    /// each block keep one inner channel after epoch 1; resume rebuilds the same shapes
    /// and ends like the uninterrupted run; the saved model loads with its smaller shapes.
    @Test func pruneTrainRebuildsAndResumes() throws {
        var (cfg, dirA) = shortResNetRun(epochs: 3, method: .prunetrain)
        cfg.prunetrain_interval = 1
        cfg.prunetrain_threshold = 1e9
        let full = quiet(try Trainer(config: cfg, runDir: dirA))
        let m = try full.run()
        #expect(full.method(PruneTrainMethod.self)?.prunetrain.widths.values.allSatisfy { $0 == 1 } == true)
        #expect(m[0].inference_flops! == m[0].dense_inference_flops!)
        #expect(m[1].inference_flops! < m[0].inference_flops! * 0.7)
        #expect(m.last!.conv_compression! > 1.5)

        let dirB = SyntheticData.temporaryDirectory("run")
        try quiet(Trainer(config: cfg, runDir: dirB)).run(untilEpoch: 2)
        let resumed = quiet(try Trainer.resume(runDir: dirB))
        let mRes = try resumed.run()
        #expect(comparable(mRes) == comparable(m))
        #expect(weights(resumed) == weights(full))
        let saved = try SavedModel(path: dirB + "/model.safetensors")
        #expect(saved.model.parameters().first { $0.name == "layer1.0.conv1.weight" }?.shape == [1, 16, 3, 3])
    }

    @Test func nonFiniteLossStopsAndKeepsTheLastCheckpoint() throws {
        let (cfg, dir) = tinyRun(epochs: 3)
        let t = quiet(try Trainer(config: cfg, runDir: dir))
        try t.run(untilEpoch: 1)
        let before = try Data(contentsOf: URL(fileURLWithPath: dir + "/checkpoint/state.safetensors"))
        t.model.parameters()[0].value[0] = .nan
        #expect { try t.run() } throws: { e in
            "\(e)".contains("epoch 2") && "\(e)".contains("checkpoint of epoch 1")
        }
        let after = try Data(contentsOf: URL(fileURLWithPath: dir + "/checkpoint/state.safetensors"))
        #expect(before == after)
        let r = try Trainer.resume(runDir: dir)
        #expect(r.completedEpochs == 1 && weights(r).allSatisfy(\.isFinite))
    }

    @Test func existingRunIsNotOverwritten() throws {
        let (cfg, dir) = tinyRun(epochs: 1)
        try quiet(Trainer(config: cfg, runDir: dir)).run()
        #expect { try Trainer(config: cfg, runDir: dir) } throws: { "\($0)".contains("--resume") }
        #expect { try Trainer.resume(runDir: "/nonexistent/run") } throws: { "\($0)".contains("does not exist") }
    }

    /// The real binary, killed with SIGKILL mid-run, leaves a checkpoint that loads, and
    /// `--resume` finishes the run.
    @Test func sigkillMidEpochThenResume() throws {
        let exe = try #require(clicktrainExecutable(), "build the clicktrain executable first (swift build)")
        let (cfg, dir) = tinyRun(epochs: 6, model: "resnet20")
        func launch(_ args: [String]) throws -> Process {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: exe)
            p.arguments = args
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            return p
        }
        let p = try launch(["train", "--model", "resnet20", "--data", cfg.data, "--epochs", "6", "--batch-size", "32",
                            "--threads", "2", "--seed", "5", "--out", dir])
        let ck = dir + "/checkpoint/state.safetensors"
        let deadline = Date().addingTimeInterval(120)
        while !FileManager.default.fileExists(atPath: ck) && Date() < deadline && p.isRunning { usleep(20_000) }
        usleep(300_000)  // well into the next epoch
        #expect(p.isRunning, "the run ended before it could be killed")
        kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        #expect(p.terminationReason == .uncaughtSignal)
        do {  // loads: not corrupt (the trainer, and its hold on the folder, end with the block)
            let t = try Trainer.resume(runDir: dir)
            #expect(t.completedEpochs >= 1 && t.completedEpochs < 6)
        }
        let r = try launch(["train", "--resume", dir])
        r.waitUntilExit()
        #expect(r.terminationStatus == 0)
        let metrics = try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(metrics.count == 6)
    }
}

/// The clicktrain binary built next to the test bundle, if any.
func clicktrainExecutable() -> String? {
    var dir = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
    for _ in 0..<4 {
        let c = dir.appendingPathComponent("clicktrain").path
        if FileManager.default.isExecutableFile(atPath: c) { return c }
        dir = dir.deletingLastPathComponent()
    }
    return nil
}

@Suite("Starting from saved weights")
struct InitWeightsTests {
    /// A run started with `init_weights` begins from the file's weights; a classifier with
    /// another class count starts fresh with a note; another mismatch names the tensor.
    @Test func initLoadsWeightsAndToleratesOnlyTheHead() throws {
        let (cfg, dir) = tinyRun(epochs: 1)
        try quiet(Trainer(config: cfg, runDir: dir)).run()
        let file = dir + "/model.safetensors"
        let saved = try SafeTensors.read(file)

        var c = cfg
        c.init_weights = file
        let t = try Trainer(config: c, runDir: SyntheticData.temporaryDirectory("run"))
        for (name, entry) in t.model.stateDict() {
            if case .parameter(let p) = entry, case .f32(_, let vals)? = saved.tensors[name] {
                #expect(p.value.array == vals, "\(name)")
            }
        }
        #expect(t.startNotes.isEmpty)

        // The head with 7 classes instead of 10 (PyTorch DataParallel names): the rest loads.
        var tensors: [(String, SafeTensors.Value)] = []
        for name in saved.order {
            var v = saved.tensors[name]!
            if name.hasPrefix("fc3."), case .f32(let shape, let vals) = v {
                let per = shape.count == 2 ? shape[1] : 1
                v = .f32(shape: [7] + shape.dropFirst(), values: Array(vals.prefix(7 * per)))
            }
            tensors.append(("module." + name, v))
        }
        let headFile = SyntheticData.temporaryDirectory("w") + ".safetensors"
        try SafeTensors.write(tensors, to: headFile)
        c.init_weights = headFile
        let h = try Trainer(config: c, runDir: SyntheticData.temporaryDirectory("run"))
        #expect(h.startNotes.count == 1 && h.startNotes[0].contains("fc3"), "\(h.startNotes)")
        let conv = try #require(h.model.parameters().first { $0.name == "conv1.weight" })
        guard case .f32(_, let convVals)? = saved.tensors["conv1.weight"] else { Issue.record("no conv1"); return }
        #expect(conv.value.array == convVals)

        // Another tensor misshapen: an error naming it, and no run folder content.
        tensors = saved.order.map { name in
            name == "conv2.weight" ? (name, .f32(shape: [1], values: [0])) : (name, saved.tensors[name]!)
        }
        let badFile = SyntheticData.temporaryDirectory("w") + ".safetensors"
        try SafeTensors.write(tensors, to: badFile)
        c.init_weights = badFile
        #expect { try Trainer(config: c, runDir: SyntheticData.temporaryDirectory("run")) } throws: {
            "\($0)".contains("conv2.weight")
        }
    }
}
