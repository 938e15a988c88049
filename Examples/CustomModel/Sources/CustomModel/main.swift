// A network of our own (a residual block, a channel concatenation, a layer the library does
// not know) trained dense, with ClickTrain, and with PAT plus activation-gradient pruning,
// through the public API; then a training loop written by hand. A short run: a few hundred
// steps per method. Data: CLICKTRAIN_DATA or Debian's /usr/share/datasets/fashion-mnist.
import ClickTrain
import Foundation

/// A learned scale per channel, [N, C, H, W] → [N, C, H, W]: a layer no pruning method knows.
final class ChannelScale: Layer {
    let scale: Parameter
    var isTraining = true
    var needsInputGradient = true
    private var input: Tensor?

    init(_ channels: Int) {
        scale = Parameter(Tensor(shape: [channels]))
        scale.value.fill(1)
    }
    var localState: [(String, StateEntry)] { [("scale", .parameter(scale))] }
    func outputShape(for input: [Int]) -> [Int] { input }

    func forward(_ x: Tensor) -> Tensor {
        input = x
        let y = Tensor(shape: x.shape), plane = x.shape[2] * x.shape[3]
        for i in 0..<x.count { y.data[i] = x.data[i] * scale.value.data[(i / plane) % x.shape[1]] }
        return y
    }
    func backward(_ dy: Tensor) -> Tensor {
        let x = input!, plane = x.shape[2] * x.shape[3], dx = Tensor(shape: x.shape)
        scale.grad.zero()
        for i in 0..<x.count {
            let c = (i / plane) % x.shape[1]
            scale.grad.data[c] += dy.data[i] * x.data[i]
            dx.data[i] = dy.data[i] * scale.value.data[c]
        }
        return dx
    }
}

/// [N, 1, 28, 28] images → [N, 10] logits.
func makeModel(seed: UInt64 = 1) -> Sequential {
    var rng = RNG(seed: seed)
    func conv(_ i: Int, _ o: Int, _ k: Int) -> Conv2d { Conv2d(i, o, kernelSize: k, padding: k / 2, rng: &rng) }
    func block(_ i: Int, _ o: Int, _ k: Int) -> Sequential {
        Sequential([("conv", conv(i, o, k)), ("bn", BatchNorm2d(o)), ("relu", ReLU())])
    }
    let body = Sequential([("conv1", conv(16, 16, 3)), ("bn1", BatchNorm2d(16)), ("relu", ReLU()),
                           ("conv2", conv(16, 16, 3)), ("bn2", BatchNorm2d(16))])
    return Sequential([
        ("stem", block(1, 16, 3)),                          // [N, 16, 28, 28]
        ("res", Residual(body: body)),                      // relu(x + body(x))
        ("pool", MaxPool2d(kernelSize: 2)),                 // [N, 16, 14, 14]
        ("mix", Concat([block(16, 32, 3), block(16, 16, 1)])), // [N, 48, 14, 14]
        ("scale", ChannelScale(48)),
        ("pool2", MaxPool2d(kernelSize: 2)),                // [N, 48, 7, 7]
        ("head", block(48, 64, 3)),                         // [N, 64, 7, 7]
        ("gap", GlobalAvgPool()),                           // [N, 64]
        ("fc", Linear(64, 10, rng: &rng)),                  // [N, 10]
    ])
}

var config = RunConfig()
config.model = "custom-cnn"
config.data = ProcessInfo.processInfo.environment["CLICKTRAIN_DATA"] ?? ""
config.epochs = 4
config.max_steps_per_epoch = 120
let runs = FileManager.default.temporaryDirectory.appendingPathComponent("clicktrain-example-\(getpid())").path

/// Trains a new instance of the model with `method` in its own run folder.
@MainActor func train(_ method: MethodKind, _ change: (inout RunConfig) -> Void = { _ in }) throws -> (Trainer, EpochMetrics) {
    var c = config
    c.method = method
    change(&c)
    let trainer = try Trainer(model: makeModel(), config: c, runDir: "\(runs)/\(method)")
    trainer.log = { print("  \($0)") }
    trainer.showProgressBar = false
    let last = try trainer.run().last!
    print(String(format: "%@: test accuracy %.2f%%, conv compression %.2fx", "\(method)", 100 * last.test_acc,
                 last.conv_compression ?? 1))
    return (trainer, last)
}

do {
    _ = try train(.dense)
    // Hard pruning after 30% of the run (epoch 1 of 4); PAT also prunes 90% of the
    // activation gradients.
    _ = try train(.pat) { $0.grad_prune = 0.9 }
    let (clicktrain, last) = try train(.clicktrain) { $0.compression = 8 }

    // The saved model in a new instance of the network evaluates to the same accuracy.
    let reloaded = makeModel(seed: 42)
    _ = try ModelState.initialize(reloaded, from: clicktrain.modelPath)
    let (_, accuracy) = Trainer.evaluate(model: reloaded, dataset: clicktrain.testSet, batchSize: 256,
                                         augmentation: config.augmentation(for: clicktrain.trainSet))
    print(String(format: "reloaded %@: test accuracy %.2f%%", clicktrain.modelPath, 100 * accuracy))
    guard accuracy == last.test_acc else {
        print(String(format: "error: the reloaded model scores %.2f%%, the trained one %.2f%%", 100 * accuracy, 100 * last.test_acc))
        exit(1)
    }

    // The same training by hand: forward, loss, backward, the methods' hooks, the optimizer.
    var c = config
    c.method = .clicktrain
    c.epochs = 2
    c.epoch_choose_p_k = 1
    c.epoch_hard_prune_p_k = 1
    c = c.resolvingDefaults()
    let model = makeModel()
    model.assignNames()
    let optimizer = SGD(parameters: model.parameters(), learningRate: 0.05, momentum: 0.9, weightDecay: c.weight_decay)
    let methods = try c.makeMethods(for: model)
    let grad = Tensor(shape: [c.batch_size, 10])
    for epoch in 0..<c.epochs {
        for m in methods { try m.epochStart(epoch: epoch) }
        let loader = BatchLoader(dataset: clicktrain.trainSet, batchSize: c.batch_size,
                                 augmentation: c.augmentation(for: clicktrain.trainSet), shuffle: true,
                                 seed: c.seed, epoch: epoch, dropLast: true)
        var loss = 0.0
        for (i, batch) in loader.enumerated() where i < c.max_steps_per_epoch {
            var info = StepInfo(epoch: epoch, step: i, stepsPerEpoch: c.max_steps_per_epoch)
            for m in methods { m.stepStart(info) }
            let logits = model.forward(batch.images)
            info.loss = softmaxCrossEntropy(logits: logits, labels: batch.labels, grad: grad).loss
            loss += Double(info.loss) / Double(c.max_steps_per_epoch)
            _ = model.backward(grad)
            for m in methods { m.afterBackward(info) }
            for m in methods { m.beforeOptimizerStep(info) }
            optimizer.step()
        }
        for m in methods { _ = m.epochEnd(completedEpochs: epoch + 1) }
        print(String(format: "hand-written loop, epoch %d: mean loss %.4f", epoch + 1, loss))
    }
    let (_, handAccuracy) = Trainer.evaluate(model: model, dataset: clicktrain.testSet, batchSize: 256,
                                             augmentation: c.augmentation(for: clicktrain.trainSet))
    print(String(format: "hand-written loop: test accuracy %.2f%%", 100 * handAccuracy))
    try? FileManager.default.removeItem(atPath: runs)
    print(String(format: "conv compression %.2fx", last.conv_compression ?? 1))
} catch {
    print("error: \(error)")
    exit(1)
}
