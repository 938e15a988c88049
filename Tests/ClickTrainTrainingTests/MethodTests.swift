import ClickTrainCore
import ClickTrainNN
import ClickTrainPruning
import ClickTrainSparse
import ClickTrainTestSupport
import ClickTrainTraining
import Foundation
import Testing

/// A small ResNet-20 on 8x8 single-channel inputs, 4 classes, and its training step with
/// the methods a configuration asks for: each method is driven only through the
/// `TrainingMethod` hooks, as the trainer drives it.
struct MethodHarness {
    let model: Sequential
    let step: TrainingStep
    let stepsPerEpoch = 3

    init(_ configure: (inout RunConfig) -> Void) throws {
        var cfg = RunConfig()
        cfg.epochs = 4
        cfg.epoch_choose_p_k = 1
        cfg.epoch_hard_prune_p_k = 2
        cfg.prunetrain_interval = 1
        configure(&cfg)
        model = try ModelZoo.make("resnet20", input: ModelInput(channels: 1, size: 8, classes: 4), seed: 1)
        step = TrainingStep(model: model, optimizer: SGD(parameters: model.parameters(), learningRate: 0.1),
                            methods: try cfg.makeMethods(for: model), batchSize: 4, classes: 4)
    }

    func method<T: TrainingMethod>(_: T.Type) -> T? { step.methods.lazy.compactMap { $0 as? T }.first }

    /// One epoch's hooks and steps; returns its phase.
    func epoch(_ e: Int) throws -> String {
        for m in step.methods { try m.epochStart(epoch: e) }
        for s in 0..<stepsPerEpoch {
            let x = Reference.random([4, 1, 8, 8], seed: UInt64(s + 10 * e))
            _ = try step.run(images: x, labels: [0, 1, 2, 3], info: StepInfo(epoch: e, step: s, stepsPerEpoch: stepsPerEpoch))
        }
        return step.methods.lazy.compactMap { $0.phase(epoch: e) }.first ?? "dense"
    }

    /// Every kept 3x3 kernel of the pruned layers has at most 4 weights, none outside its mask.
    func expectPatternMasks(_ pruner: PatternPruner) {
        for (p, l) in zip(pruner.parameters, pruner.state.layers) {
            let m = l.mask()
            for i in 0..<p.value.count where m[i] == 0 { #expect(p.value[i] == 0, "\(p.name)[\(i)] outside its mask") }
            #expect(l.keptKernels < l.kernels)
            for k in 0..<l.kernels where !l.removed[k] {
                #expect((0..<9).filter { p.value[k * 9 + $0] != 0 }.count <= 4)
            }
        }
    }
}

@Suite("Training methods through the TrainingMethod protocol", .serialized)
struct TrainingMethodTests {
    @Test func denseHasNoMethods() throws {
        let h = try MethodHarness { _ in }
        #expect(h.step.methods.isEmpty)
        #expect(try h.epoch(0) == "dense")
    }

    @Test func clickTrainStagesByEpoch() throws {
        let h = try MethodHarness { $0.method = .clicktrain }
        let ct = try #require(h.method(ClickTrainMethod.self))
        #expect(ct.pruner.parameters.count == 18)  // 19 3x3 convs minus the first
        for e in 0..<4 {
            #expect(try h.epoch(e) == ["warm-up", "regularised", "pruned", "pruned"][e])
            // The importance window (the epoch before the choice) filled the importance.
            if e == 0 { #expect(ct.pruner.importance != nil) }
            #expect(ct.pruner.state.chosen == (e >= 1) && ct.pruner.state.hardPruned == (e >= 2))
            #expect(ct.trainsSparse == (e >= 2))
        }
        h.expectPatternMasks(ct.pruner)
        // The checkpoint carries the state and masks; a fresh method restores them.
        let ck = try ct.checkpoint()
        let other = try MethodHarness { $0.method = .clicktrain }
        let restored = try #require(other.method(ClickTrainMethod.self))
        _ = try restored.restore(from: ck)
        #expect(restored.pruner.state == ct.pruner.state)
        #expect(restored.pruner.parameters.allSatisfy { $0.mask != nil })
    }

    @Test func pruneAfterTrainingPrunesByMagnitudeAtItsEpoch() throws {
        let h = try MethodHarness { $0.method = .pat }
        let pat = try #require(h.method(PruneAfterTrainingMethod.self))
        for e in 0..<4 {
            #expect(try h.epoch(e) == ["dense", "dense", "fine-tune", "fine-tune"][e])
            #expect(pat.pruner.state.hardPruned == (e >= 2))
        }
        #expect(pat.pruner.importance == nil)
        h.expectPatternMasks(pat.pruner)
    }

    @Test func pruneTrainReportsTheChannelsItRemoved() throws {
        let h = try MethodHarness {
            $0.method = .prunetrain
            $0.prunetrain_threshold = 1e9  // every channel is dead: each block keeps one
        }
        let pt = try #require(h.method(PruneTrainMethod.self))
        #expect(try h.epoch(0) == "prunetrain")
        #expect(pt.prunetrain.lambda != nil)  // set at the first step from the loss
        let change = try #require(pt.epochEnd(completedEpochs: 1))
        #expect(change.slices["layer1.0.conv1.weight"]?.axis == 0)
        #expect(change.slices["layer1.0.bn1.weight"]?.axis == 0)
        #expect(change.slices["layer1.0.conv2.weight"]?.axis == 1)
        #expect(change.slices["layer1.0.conv2.weight"]?.indices.count == 1)
        #expect(change.slices["layer1.0.bn2.weight"] != nil)  // listed; its shape did not change
        #expect(h.model.parameters().first { $0.name == "layer1.0.conv1.weight" }?.shape == [1, 16, 3, 3])
    }

    @Test func gradientPruningReachesItsRate() throws {
        let h = try MethodHarness { $0.grad_prune = 0.9 }
        let gp = try #require(h.method(GradientPruningMethod.self))
        _ = try h.epoch(0)
        var m = EpochMetrics(epoch: 1, lr: 0.1, train_loss: 0, train_acc: 0, test_loss: 0, test_acc: 0,
                             images_per_s: 0, seconds: 0, phase: "dense")
        let note = gp.addMetrics(to: &m)
        let s = try #require(m.grad_sparsity_conv_mean)
        #expect(abs(s - 0.9) < 0.05, "conv gradient sparsity \(s)")
        #expect(note.contains("grad sparsity"))
    }

    /// ClickTrain and gradient pruning together: both hooks run in one step, the masks
    /// hold after hard pruning and the gradients are pruned on the pattern kernels too.
    @Test func clickTrainWithGradientPruning() throws {
        let h = try MethodHarness {
            $0.method = .clicktrain
            $0.grad_prune = 0.9
        }
        #expect(h.step.methods.count == 2)
        let ct = try #require(h.method(ClickTrainMethod.self)), gp = try #require(h.method(GradientPruningMethod.self))
        for e in 0..<4 { _ = try h.epoch(e) }
        h.expectPatternMasks(ct.pruner)
        let s = try #require(gp.policy.meanSparsity(of: gp.policy.layerNames))
        #expect(s > 0.8, "gradient sparsity \(s) in the pruned phase")
    }
}
