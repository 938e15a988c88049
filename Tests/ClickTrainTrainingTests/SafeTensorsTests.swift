import ClickTrainCore
import ClickTrainNN
import ClickTrainTestSupport
import ClickTrainTraining
import Foundation
import Testing

@Suite("safetensors and model state")
struct SafeTensorsTests {
    @Test func roundTripWithMetadataAndAlignment() throws {
        let tensors: [(String, SafeTensors.Value)] = [
            ("a.weight", .f32(shape: [2, 3], values: [1, 2, 3, 4, 5, -6.5])),
            ("bn.num_batches_tracked", .i64(shape: [], values: [42])),
            ("weird \"name\"", .f32(shape: [1], values: [.pi])),
        ]
        let data = SafeTensors.encode(tensors, metadata: ["model": "x", "note": "a \"quoted\" value"])
        let headerLen = data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        #expect((8 + headerLen) % 8 == 0)
        let back = try SafeTensors.decode(data, path: "mem")
        #expect(back.order == tensors.map(\.0))
        for (n, v) in tensors { #expect(back.tensors[n] == v) }
        #expect(back.metadata == ["model": "x", "note": "a \"quoted\" value"])
    }

    @Test func corruptFilesAreErrorsNamingTheFile() throws {
        let data = SafeTensors.encode([("w", .f32(shape: [4], values: [1, 2, 3, 4]))])
        #expect { try SafeTensors.decode(data.prefix(data.count - 4), path: "cut.safetensors") } throws: {
            "\($0)".contains("cut.safetensors") && "\($0)".contains("'w'")
        }
        #expect { try SafeTensors.decode(Data([1, 2, 3]), path: "tiny") } throws: { "\($0)".contains("tiny") }
        var bad = data
        bad[0] = 0xFF
        #expect { try SafeTensors.decode(bad, path: "len") } throws: { "\($0)".contains("header length") }
        #expect { try SafeTensors.read("/nonexistent/model.safetensors") } throws: { "\($0)".contains("does not exist") }
    }

    @Test func modelStateRoundTripsAndRejectsOtherShapes() throws {
        let a = try ModelZoo.make("resnet20", input: .fashionMNIST, seed: 1)
        let b = try ModelZoo.make("resnet20", input: .fashionMNIST, seed: 2)
        let bn = a.stateDict().first { $0.0 == "bn1.num_batches_tracked" }!.1
        if case .counter(let c) = bn { c.value = 17 }
        let dict = Dictionary(uniqueKeysWithValues: ModelState.tensors(of: a))
        try ModelState.load(dict, into: b, path: "m")
        let x = Reference.random([2, 1, 28, 28], seed: 3)
        a.train(false)
        b.train(false)
        #expect(a.forward(x).array == b.forward(x).array)
        #expect(dict["bn1.num_batches_tracked"] == .i64(shape: [], values: [17]))

        let c = try ModelZoo.make("resnet32", input: .fashionMNIST, seed: 1)
        #expect { try ModelState.load(dict, into: c, path: "m.safetensors") } throws: { "\($0)".contains("missing") }
        let wide = try ModelZoo.make("resnet20", input: .cifar10, seed: 1)
        #expect { try ModelState.load(dict, into: wide, path: "m.safetensors") } throws: {
            "\($0)".contains("conv1.weight") && "\($0)".contains("[16, 1, 3, 3]")
        }
    }
}

@Suite("Run configuration")
struct RunConfigTests {
    @Test func officialStyleYAML() throws {
        let yaml = """
            model: resnet32
            dataset: cifar10
            epochs: 190
            learning_rate: 0.1
            schedule: [55, 130]
            method: clicktrain
            num_patterns: 4
            epoch_choose_p_k: 61
            grp_lasso_coeff: 0.00025
            prune_ratios:
              module.layer1.0.conv1.weight: 55
            """
        let c = try RunConfig.decode(yaml: yaml, source: "cfg.yaml")
        #expect(c.model == "resnet32" && c.epochs == 190 && c.schedule == [55, 130] && c.lr_schedule == .step)
        #expect(c.lrScheduleValue == .step(milestones: [55, 130], gamma: 0.1))
        let again = try RunConfig.decode(yaml: c.yaml(), source: "round trip")
        #expect(again == c)
        #expect(RunConfig.unusedKeys(yaml: yaml).isEmpty)
        #expect(RunConfig.unusedKeys(yaml: c.yaml()).isEmpty)
    }

    @Test func timePerPhaseSumsEpochsInOrder() throws {
        let lines = [("warm-up", 10.0), ("warm-up", 12.5), ("regularised", 20.0), ("pruned", 7.25), ("pruned", 7.0)]
        let metrics = try lines.enumerated().map { i, l in
            try JSONDecoder().decode(EpochMetrics.self, from: Data("""
                {"epoch": \(i + 1), "lr": 0.1, "train_loss": 1, "train_acc": 0.5, "test_loss": 1, "test_acc": 0.5,
                 "images_per_s": 100, "seconds": \(l.1), "phase": "\(l.0)"}
                """.utf8))
        }
        #expect(Trainer.phaseTimes(metrics) == "warm-up 2 epochs 22.5 s, regularised 1 epoch 20.0 s, pruned 2 epochs 14.2 s")
    }

    @Test func unusedKeysAreListed() {
        // Keys of other tools, and misspellings, are reported (the CLI warns about them).
        let yaml = "model: resnet20\nchoose_epoch: 3\narch: resnet\nepochs: 2\n"
        #expect(RunConfig.unusedKeys(yaml: yaml) == ["arch", "choose_epoch"])
    }

    @Test func badValuesNameTheFileAndField() {
        #expect { try RunConfig.decode(yaml: "epochs: many", source: "x.yaml") } throws: {
            "\($0)".contains("x.yaml") && "\($0)".contains("epochs")
        }
        #expect { try RunConfig.decode(yaml: "model: resnet21", source: "y.yaml") } throws: {
            "\($0)".contains("y.yaml") && "\($0)".contains("resnet21")
        }
        #expect { try RunConfig.decode(yaml: "batch_size: 0", source: "z.yaml") } throws: { "\($0)".contains("batch_size") }
    }
}

@Suite("Configuration keys defined once")
struct ConfigOptionTests {
    /// config.yaml as a person writes it: short numbers, only the keys the run uses.
    @Test func writtenConfigIsReadableAndHoldsWhatApplies() throws {
        var c = RunConfig()
        c.epochs = 3
        let dense = c.yaml()
        #expect(dense.contains("learning_rate: 0.1\n") && dense.contains("weight_decay: 0.0005\n"))
        let keys = Set(dense.split(separator: "\n").map { String($0.prefix { $0 != ":" }) })
        for key in ["num_patterns", "grp_lasso_coeff", "grad_prune_dist", "prunetrain_threshold", "schedule", "gamma",
                    "prune_ratios", "compression", "data"] {
            #expect(!keys.contains(key), "a dense cosine run's config.yaml lists \(key)")
        }
        c.method = .clicktrain
        c.grad_prune = 0.9
        c.lr_schedule = .step
        c.schedule = [1, 2]
        let ct = c.yaml()
        for key in ["num_patterns: 4", "grp_lasso_coeff: 0.00025", "grad_prune_dist: gaussian", "schedule: [1, 2]",
                    "gamma: 0.1", "compression: 8.0"] {
            #expect(ct.contains(key + "\n"), "missing \(key)")
        }
        #expect(!ct.contains("prunetrain"))
        #expect(try RunConfig.decode(yaml: ct, source: "written") == c)
    }

    /// Every option with a YAML key round-trips through config.yaml when it applies.
    @Test func everyKeyRoundTrips() throws {
        var c = RunConfig()
        c.model = "resnet32"; c.dataset = .cifar10; c.data = "/tmp/some data"; c.epochs = 20; c.batch_size = 64
        c.init_weights = "/tmp/weights: v1.safetensors"
        c.learning_rate = 0.05; c.momentum = 0.8; c.nesterov = true; c.weight_decay = 1e-5; c.decay_bn_bias = false
        c.lr_schedule = .step; c.schedule = [5, 8]; c.gamma = 0.2; c.warmup_epochs = 1.5; c.label_smoothing = 0.1
        c.crop_padding = 3; c.horizontal_flip = false; c.seed = 7; c.threads = 1; c.max_steps_per_epoch = 9; c.sync_bn = true
        c.grad_prune = 0.8; c.grad_prune_dist = .lognormal; c.grad_prune_rule = .paper
        c.grad_prune_exempt_first = true; c.grad_prune_exempt_last = true
        c.method = .clicktrain; c.num_patterns = 8; c.pattern_weights = 4; c.pattern_pool = .generic
        c.pool_scope = .network; c.epoch_choose_p_k = 4; c.epoch_hard_prune_p_k = 12; c.grp_lasso_coeff = 1e-4
        c.prune_ratios = ["module.layer1.0.conv1.weight": 55]; c.importance_window = 50
        let back = try RunConfig.decode(yaml: c.yaml(), source: "written")
        #expect(back == c)
        var p = RunConfig()
        p.method = .prunetrain; p.prunetrain_interval = 2; p.prunetrain_threshold = 1e-3; p.prunetrain_penalty_share = 0.3
        #expect(try RunConfig.decode(yaml: p.yaml(), source: "written") == p)
        // Every YAML key of the table was exercised by one of the two.
        let written = Set((c.yaml() + p.yaml()).split(separator: "\n").compactMap { $0.split(separator: ":").first }
            .filter { !$0.hasPrefix(" ") }.map(String.init))
        let keys = Set(RunConfig.options.compactMap(\.key)).subtracting(["compression"])  // absent with prune_ratios
        #expect(keys.subtracting(written).isEmpty, "not written: \(keys.subtracting(written))")
    }

    @Test func commandLineUsesTheSameOptions() throws {
        var c = RunConfig()
        try c.applyCommandLine(["--epochs", "3", "--lr=0.05", "--nesterov", "--no-decay-bn-bias", "--milestones", "1,2",
                                "--method", "pat", "--grad-prune-exempt", "first", "--flip", "on", "--dataset", "cifar-10"])
        #expect(c.epochs == 3 && c.learning_rate == 0.05 && c.nesterov && !c.decay_bn_bias)
        #expect(c.schedule == [1, 2] && c.lr_schedule == .step && c.method == .pat)
        #expect(c.grad_prune_exempt_first && !c.grad_prune_exempt_last && c.horizontal_flip == true && c.dataset == .cifar10)
        for (words, needle) in [(["--epochs", "x"], "--epochs"), (["--method", "magic"], "--method"),
                                (["--bogus", "1"], "--bogus"), (["--lr"], "--lr"), (["--nesterov=1"], "--nesterov")] {
            var d = RunConfig()
            #expect { try d.applyCommandLine(words) } throws: { "\($0)".contains(needle) }
        }
        // Every flag is in the help.
        for o in RunConfig.options { if let f = o.flag { #expect(RunConfig.commandLineHelp.contains("--" + f)) } }
    }

    /// Configs written before the keys were typed (long float forms, every key) still load.
    @Test func olderConfigFilesLoad() throws {
        let old = """
            model: resnet20
            dataset: fashion-mnist
            data: ''
            learning_rate: 1.00000001490116e-1
            warmup_epochs: 0e+0
            lr_schedule: cosine
            schedule: []
            prunetrain_threshold: 9.9999997473787516e-05
            method: clicktrain
            """
        let c = try RunConfig.decode(yaml: old, source: "old.yaml")
        #expect(c.learning_rate == 0.1 && c.data == "" && c.prunetrain_threshold == 1e-4 && c.method == .clicktrain)
    }
}
