import ClickTrain
import ClickTrainTestSupport
import Foundation
import Testing

/// A layer the library does not know: a learned scale per channel, [N, C, H, W] → same.
/// Written against the public `Layer` protocol only, as an application would.
final class ChannelScale: Layer {
    let scale: Parameter
    var isTraining = true
    var needsInputGradient = true
    private var input: Tensor?

    init(_ channels: Int) {
        let s = Tensor(shape: [channels])
        s.fill(1)
        scale = Parameter(s)
    }

    var localState: [(String, StateEntry)] { [("scale", .parameter(scale))] }
    func outputShape(for input: [Int]) -> [Int] { input }

    func forward(_ x: Tensor) -> Tensor {
        input = x
        let y = Tensor(shape: x.shape)
        let c = x.shape[1], plane = x.shape[2] * x.shape[3]
        for i in 0..<x.count { y.data[i] = x.data[i] * scale.value.data[(i / plane) % c] }
        return y
    }

    func backward(_ gradOutput: Tensor) -> Tensor {
        let x = input!, c = x.shape[1], plane = x.shape[2] * x.shape[3]
        let dx = Tensor(shape: x.shape)
        scale.grad.zero()
        for i in 0..<x.count {
            let ch = (i / plane) % c
            scale.grad.data[ch] += gradOutput.data[i] * x.data[i]
            dx.data[i] = gradOutput.data[i] * scale.value.data[ch]
        }
        return dx
    }
}

/// A network that is not in the model zoo: a stem, a residual block, two branches whose
/// outputs are concatenated (a 3x3 and a 1x1 conv), the user's own layer, a classifier.
func customNet(seed: UInt64 = 3) -> Sequential {
    var rng = RNG(seed: seed)
    func convBNReLU(_ i: Int, _ o: Int, _ k: Int) -> Sequential {
        Sequential([("conv", Conv2d(i, o, kernelSize: k, padding: k / 2, rng: &rng)), ("bn", BatchNorm2d(o)), ("relu", ReLU())])
    }
    let stem = convBNReLU(1, 16, 3)
    let body = Sequential([("conv1", Conv2d(16, 16, kernelSize: 3, padding: 1, rng: &rng)), ("bn1", BatchNorm2d(16)),
                           ("relu", ReLU()),
                           ("conv2", Conv2d(16, 16, kernelSize: 3, padding: 1, rng: &rng)), ("bn2", BatchNorm2d(16))])
    let wide = convBNReLU(16, 16, 3), narrow = convBNReLU(16, 8, 1)
    return Sequential([
        ("stem", stem), ("res", Residual(body: body)), ("pool", MaxPool2d(kernelSize: 2)),
        ("mix", Concat([wide, narrow])), ("scale", ChannelScale(24)),
        ("pool2", MaxPool2d(kernelSize: 2)), ("flatten", Flatten()), ("fc", Linear(24 * 4 * 4, 10, rng: &rng)),
    ])
}

/// 16x16 synthetic images in Fashion-MNIST's file format and a short run's settings.
func customRun(epochs: Int = 3, method: MethodKind = .dense) -> (RunConfig, String) {
    let data = SyntheticData.temporaryDirectory("data")
    SyntheticData.writeIDXFolder(data, train: 384, test: 128, size: 16) { try! IDX.write($0, dims: $1, bytes: $2) }
    var c = RunConfig()
    c.model = "custom-net"
    c.dataset = .fashionMNIST
    c.data = data
    c.epochs = epochs
    c.batch_size = 32
    c.learning_rate = 0.05
    c.crop_padding = 0
    c.threads = 2
    c.seed = 5
    c.method = method
    return (c, SyntheticData.temporaryDirectory("run"))
}

func quietly(_ t: Trainer) -> Trainer {
    t.log = { _ in }
    t.showProgressBar = false
    return t
}

/// The 3x3 conv weights pattern pruning should prune: all but the model's first conv.
let prunedConvs = ["res.body.conv1.weight", "res.body.conv2.weight", "mix.0.conv.weight"]

@Suite("Custom models through the public API", .serialized)
struct CustomModelTests {
    @Test func clickTrainPrunesEveryThreeByThreeConvOfACustomModel() throws {
        var (cfg, dir) = customRun(epochs: 3, method: .clicktrain)
        cfg.compression = 4
        cfg.epoch_choose_p_k = 1
        cfg.epoch_hard_prune_p_k = 2
        cfg.crop_padding = 2  // evaluation must not crop, whatever augmentation it is given
        let t = quietly(try Trainer(model: customNet(), config: cfg, runDir: dir))
        #expect(t.startNotes.contains { $0.contains("scale (ChannelScale)") }, "\(t.startNotes)")
        let metrics = try t.run()
        let byName = Dictionary(uniqueKeysWithValues: t.model.parameters().map { ($0.name, $0) })
        for name in prunedConvs {
            let p = try #require(byName[name])
            let mask = try #require(p.mask, "\(name) has no mask")
            for k in 0..<(p.shape[0] * p.shape[1]) {
                let kept = (0..<9).filter { mask[k * 9 + $0] != 0 }.count
                #expect(kept == 0 || kept == 4, "\(name) kernel \(k) keeps \(kept)")
            }
        }
        for name in ["stem.conv.weight", "mix.1.conv.weight", "scale.scale", "fc.weight"] {
            #expect(byName[name]?.mask == nil, "\(name) should stay dense")
        }
        #expect(metrics.last!.conv_compression! > 2, "\(metrics.last!)")
        #expect(metrics.last!.test_acc > 0.5, "\(metrics)")

        // The saved model, under the name given, loaded into a new instance of the network,
        // evaluates the same.
        let saved = try SafeTensors.decode(Data(contentsOf: URL(fileURLWithPath: dir + "/model.safetensors")), path: dir)
        #expect(saved.metadata["model"] == "custom-net")
        let reloaded = customNet(seed: 99)
        _ = try ModelState.initialize(reloaded, from: dir + "/model.safetensors")
        let (_, acc) = Trainer.evaluate(model: reloaded, dataset: t.testSet, batchSize: 32,
                                        augmentation: cfg.augmentation(for: t.trainSet))
        #expect(acc == metrics.last!.test_acc)
    }

    @Test func patAndGradientPruningRunOnACustomModel() throws {
        var (cfg, dir) = customRun(epochs: 2, method: .pat)
        cfg.compression = 4
        cfg.epoch_hard_prune_p_k = 1
        cfg.grad_prune = 0.9
        let t = quietly(try Trainer(model: customNet(), config: cfg, runDir: dir))
        let metrics = try t.run()
        let masked = t.model.parameters().filter { $0.mask != nil }.map(\.name)
        #expect(masked.sorted() == prunedConvs.sorted())
        let sparsity = try #require(metrics.last!.grad_sparsity)
        #expect(Set(sparsity.keys).isSuperset(of: ["res.body.conv1", "mix.0.conv", "mix.1.conv", "fc"]), "\(sparsity.keys)")
        #expect(metrics.last!.grad_sparsity_conv_mean! > 0.5)
    }

    @Test func aCustomRunResumesIntoANewInstance() throws {
        let (cfg, dir) = customRun(epochs: 3)
        let whole = try quietly(Trainer(model: customNet(), config: cfg, runDir: dir)).run()
        let dir2 = SyntheticData.temporaryDirectory("run")
        _ = try quietly(Trainer(model: customNet(), config: cfg, runDir: dir2)).run(untilEpoch: 1)
        let resumed = try quietly(Trainer.resume(runDir: dir2, model: customNet(seed: 42))).run()
        #expect(resumed.map(\.test_acc) == whole.map(\.test_acc))
        #expect(resumed.map(\.train_loss) == whole.map(\.train_loss))
    }

    @Test func aModelWithTheWrongOutputIsAClearError() throws {
        let (cfg, dir) = customRun()
        var rng = RNG(seed: 1)
        let wrong = Sequential([("conv", Conv2d(1, 4, kernelSize: 3, rng: &rng)), ("gap", GlobalAvgPool())])
        #expect {
            _ = try Trainer(model: wrong, config: cfg, runDir: dir)
        } throws: { "\($0)".contains("[1, 10] logits are expected") }
    }

    /// The loop written by hand (forward, loss, backward, the methods' hooks, optimizer
    /// step) trains exactly as `TrainingStep`, and ClickTrain's hooks prune in it.
    @Test func aHandWrittenLoopMatchesTheTrainingStep() throws {
        var (cfg, _) = customRun(epochs: 2, method: .clicktrain)
        cfg.compression = 4
        cfg.epoch_choose_p_k = 1
        cfg.epoch_hard_prune_p_k = 1
        cfg.importance_window = 4
        cfg = cfg.resolvingDefaults()
        let train = try ImageDataset.load(.fashionMNIST, directory: cfg.data, train: true)
        let augmentation = cfg.augmentation(for: train)

        func loop(byHand: Bool) throws -> [Float] {
            let model = customNet()
            model.assignNames()
            let optimizer = SGD(parameters: model.parameters(), learningRate: 0.05, momentum: 0.9, weightDecay: 5e-4)
            let methods = try cfg.makeMethods(for: model)
            let step = TrainingStep(model: model, optimizer: optimizer, methods: methods, batchSize: 32, classes: 10)
            let grad = Tensor(shape: [32, 10])
            for epoch in 0..<2 {
                for m in methods { try m.epochStart(epoch: epoch) }
                let loader = BatchLoader(dataset: train, batchSize: 32, augmentation: augmentation, shuffle: true,
                                         seed: 5, epoch: epoch, dropLast: true)
                for (i, batch) in loader.enumerated() where i < 6 {
                    var info = StepInfo(epoch: epoch, step: i, stepsPerEpoch: 6)
                    if byHand {
                        for m in methods { m.stepStart(info) }
                        let logits = model.forward(batch.images)
                        info.loss = softmaxCrossEntropy(logits: logits, labels: batch.labels, grad: grad).loss
                        _ = model.backward(grad)
                        for m in methods { m.afterBackward(info) }
                        for m in methods { m.beforeOptimizerStep(info) }
                        optimizer.step()
                    } else {
                        _ = try step.run(images: batch.images, labels: batch.labels, info: info)
                    }
                }
                for m in methods { _ = m.epochEnd(completedEpochs: epoch + 1) }
            }
            #expect(model.parameters().filter { $0.mask != nil }.map(\.name).sorted() == prunedConvs.sorted())
            return model.parameters().flatMap { $0.value.array }
        }
        #expect(try loop(byHand: true) == loop(byHand: false))
    }
}
