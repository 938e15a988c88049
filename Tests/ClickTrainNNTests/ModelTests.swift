import ClickTrainCore
import ClickTrainNN
import ClickTrainTestSupport
import Foundation
import Testing

@Suite("Models, loss and optimizer")
struct ModelTests {
    @Test func crossEntropyMatchesReference() {
        let logits = Tensor(shape: [2, 3], values: [1, 2, 3, 0.5, -1, 2])
        let labels: [Int32] = [2, 0]
        let grad = Tensor(shape: [2, 3])
        let (loss, correct) = labels.withUnsafeBufferPointer {
            softmaxCrossEntropy(logits: logits, labels: $0, labelSmoothing: 0.1, grad: grad)
        }
        var expected = 0.0
        var expectedGrad = [Double]()
        for r in 0..<2 {
            let row = (0..<3).map { Double(logits[r * 3 + $0]) }
            let z = row.map { exp($0) }.reduce(0, +)
            let p = row.map { exp($0) / z }
            for j in 0..<3 {
                let t = (j == Int(labels[r]) ? 0.9 : 0) + 0.1 / 3
                expected += -t * log(p[j])
                expectedGrad.append((p[j] - t) / 2)
            }
        }
        #expect(abs(Double(loss) - expected / 2) < 1e-5)
        #expect(correct == 1)
        for i in 0..<6 { #expect(abs(Double(grad[i]) - expectedGrad[i]) < 1e-6) }
    }

    /// Pruned models at inference: convs with batch norm (and ReLU) folded into one pattern
    /// pass give what the layers give one by one (ResNet blocks and VGG's Sequential).
    @Test(arguments: ["resnet20", "vgg11"])
    func foldedBatchNormMatchesLayerByLayer(_ name: String) throws {
        let input = ModelInput(channels: 3, size: 32, classes: 10)
        let model = try ModelZoo.make(name, input: input, seed: 3)
        var rng = RNG(seed: 4)
        let corners: [[Int]] = [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]]
        var folded = 0
        for (_, m) in model.namedModules() {
            if let bn = m as? BatchNorm2d {
                // Non-trivial statistics, so that folding has something to get wrong.
                for c in 0..<bn.channels {
                    bn.runningMean[c] = rng.normal() * 0.3
                    bn.runningVar[c] = 0.5 + rng.uniform()
                    bn.weight.value[c] = 0.5 + rng.uniform()
                    bn.bias.value[c] = rng.normal() * 0.2
                }
            }
            guard let conv = m as? Conv2d, conv.kernelSize == 3 else { continue }
            let w = conv.weight
            let mask = Tensor(shape: w.shape)
            for k in 0..<(w.shape[0] * w.shape[1]) where rng.uniform() > 0.6 {
                for t in corners[Int(rng.next() % 4)] { mask[k * 9 + t] = 1 }
            }
            w.mask = mask
            w.applyMask()
            folded += 1
        }
        #expect(folded > 5)
        model.train(false)
        let x = Tensor(shape: [2, 3, 32, 32])
        for i in 0..<x.count { x[i] = rng.normal() }
        let fused = model.forward(x).clone()
        let convs = model.namedModules().compactMap { $0.1 as? Conv2d }
        #expect(convs.filter { $0.weight.mask != nil && $0.foldedForwards > 0 }.count == folded, "every pruned conv ran folded")
        // So did the small unpruned ones (the 3-channel stem), and no large one.
        #expect(convs[0].inChannels == 3 && convs[0].foldedForwards > 0)
        #expect(convs.filter { $0.weight.mask == nil && $0.foldedForwards > 0 }.allSatisfy {
            $0.inChannels * $0.kernelSize * $0.kernelSize <= Conv2d.smallDenseFoldMaxWeights
        })
        for (_, m) in model.namedModules() { (m as? Conv2d)?.foldBatchNormAtInference = false }
        let separate = model.forward(x).clone()
        #expect(Reference.maxRelativeError(fused, separate) <= 1e-4)
        // The unfused path is the pattern kernels layer by layer; oneDNN on the masked
        // weights gives the same again.
        for (_, m) in model.namedModules() { (m as? Conv2d)?.usePatternKernels = false }
        #expect(Reference.maxRelativeError(model.forward(x), separate) <= 1e-4)
    }

    /// Dense models at inference: every conv followed by batch norm runs folded (oneDNN with
    /// the residual add and ReLU as post-ops, or the pattern kernels for the small ones) and
    /// gives what the layers give one by one.
    @Test(arguments: ["resnet20", "vgg11"])
    func denseFoldingMatchesLayerByLayer(_ name: String) throws {
        let model = try ModelZoo.make(name, input: ModelInput(channels: 3, size: 16, classes: 10), seed: 5)
        var rng = RNG(seed: 6)
        for (_, m) in model.namedModules() {
            guard let bn = m as? BatchNorm2d else { continue }
            for c in 0..<bn.channels {
                bn.runningMean[c] = rng.normal() * 0.3
                bn.runningVar[c] = 0.5 + rng.uniform()
                bn.weight.value[c] = 0.5 + rng.uniform()
                bn.bias.value[c] = rng.normal() * 0.2
            }
        }
        model.train(false)
        let x = Reference.random([2, 3, 16, 16], seed: 7)
        let fused = model.forward(x).clone()
        let convs = model.namedModules().compactMap { $0.1 as? Conv2d }
        #expect(convs.allSatisfy { $0.foldedForwards == 1 }, "\(convs.map(\.foldedForwards))")
        for c in convs { c.foldBatchNormAtInference = false }
        let separate = model.forward(x).clone()
        #expect(Reference.maxRelativeError(fused, separate) <= 1e-4)
    }

    /// A 1x1 conv under connectivity pruning trains on the pattern kernels (its kernels as
    /// centre taps of a 3x3): forward and both gradients equal oneDNN on the masked weight.
    @Test(arguments: [1, 2])
    func pointwiseConvWithConnectivityMask(_ stride: Int) {
        var rng = RNG(seed: 9)
        let a = Conv2d(12, 20, kernelSize: 1, stride: stride, padding: 0, bias: true, rng: &rng)
        let mask = Tensor(shape: a.weight.shape)
        for i in 12..<mask.count where rng.uniform() < 0.5 { mask[i] = 1 }  // filter 0 loses every kernel
        a.weight.mask = mask
        a.weight.applyMask()
        let b = Conv2d(weight: a.weight.value.clone(), bias: a.bias!.value.clone(), stride: stride, padding: 0)
        let x = Tensor(shape: [3, 12, 9, 9])
        for i in 0..<x.count { x[i] = rng.normal() }
        let ya = a.forward(x).clone(), yb = b.forward(x)
        #expect(a.lastForwardUsedPatternKernels && !b.lastForwardUsedPatternKernels)
        #expect(ya.shape == yb.shape)
        #expect(Reference.maxRelativeError(ya, yb) <= 1e-5)
        let dy = Tensor(shape: ya.shape)
        for i in 0..<dy.count { dy[i] = rng.normal() }
        let dxa = a.backward(dy).clone(), dxb = b.backward(dy)
        #expect(Reference.maxRelativeError(dxa, dxb) <= 1e-5, "input gradient")
        let masked = Tensor(shape: b.weight.shape)
        for i in 0..<masked.count { masked[i] = b.weight.grad[i] * mask[i] }
        #expect(Reference.maxRelativeError(a.weight.grad, masked) <= 1e-5, "weight gradient of the kept kernels")
        #expect(Reference.maxRelativeError(a.bias!.grad, b.bias!.grad) <= 1e-5, "bias gradient")
    }

    @Test func stateDictNamesFollowPyTorch() throws {
        let m = try ModelZoo.make("resnet20", input: .cifar10, seed: 1)
        let names = m.stateDict().map(\.0)
        #expect(names.first == "conv1.weight")
        #expect(names.contains("layer1.0.conv1.weight"))
        #expect(names.contains("layer2.0.shortcut.0.weight"))
        #expect(names.contains("layer2.0.shortcut.1.running_var"))
        #expect(names.contains("layer3.2.bn2.num_batches_tracked"))
        #expect(names.last == "fc.bias")
        let convs = m.parameters().filter { $0.name.hasSuffix("weight") && $0.shape.count == 4 }
        #expect(convs.count == 21)  // 19 3x3 + 2 projection shortcuts
        #expect(m.parameters().reduce(0) { $0 + $1.value.count } == 272_474)
    }

    @Test(arguments: ModelZoo.names)
    func everyModelRunsOnBothInputShapes(_ name: String) throws {
        for input in [ModelInput.fashionMNIST, .cifar10] {
            if name == "resnet50" || name == "resnet110" || name.hasPrefix("vgg") && input.size == 28 { continue }
            let m = try ModelZoo.make(name, input: input, seed: 1)
            let x = Reference.random([2, input.channels, input.size, input.size], seed: 1)
            let y = m.forward(x)
            #expect(y.shape == [2, input.classes], "\(name) \(input)")
            #expect(m.outputShape(for: x.shape) == [2, input.classes])
            _ = m.backward(y)
        }
    }

    @Test func vggHandlesSmallImages() throws {
        let m = try ModelZoo.make("vgg11", input: .fashionMNIST, seed: 1)
        #expect(m.forward(Reference.random([1, 1, 28, 28], seed: 2)).shape == [1, 10])
    }

    @Test func unknownModelIsAnError() {
        #expect(throws: UnknownModelError.self) { try ModelZoo.make("resnet21", input: .cifar10, seed: 1) }
    }

    @Test func tinyModelLearnsAFixedBatch() throws {
        let m = try ModelZoo.make("lenet5", input: ModelInput(channels: 1, size: 16, classes: 4), seed: 3)
        let x = Reference.random([16, 1, 16, 16], seed: 5)
        let labels: [Int32] = (0..<16).map { Int32($0 % 4) }
        let opt = SGD(parameters: m.parameters(), learningRate: 0.05)
        let grad = Tensor(shape: [16, 4])
        var first: Float = 0, last: Float = 0
        for step in 0..<60 {
            let logits = m.forward(x)
            let (loss, _) = labels.withUnsafeBufferPointer { softmaxCrossEntropy(logits: logits, labels: $0, grad: grad) }
            if step == 0 { first = loss }
            last = loss
            _ = m.backward(grad)
            opt.step()
        }
        #expect(last < first * 0.3, "loss \(first) -> \(last)")
    }

    @Test func sgdMatchesPyTorchRule() {
        let p = Parameter(Tensor(shape: [2], values: [1, -2]))
        let opt = SGD(parameters: [p], learningRate: 0.1, momentum: 0.9, nesterov: true, weightDecay: 0.01)
        p.grad.copy(from: Tensor(shape: [2], values: [0.5, 0.5]))
        opt.step()
        opt.step()
        // by hand: g1 = 0.5 + 0.01 w; buf1 = g1; w -= 0.1 (g1 + 0.9 buf1) ...
        var w = [1.0, -2.0], buf = [0.0, 0.0]
        for _ in 0..<2 {
            for i in 0..<2 {
                let g = 0.5 + 0.01 * w[i]
                buf[i] = 0.9 * buf[i] + g
                w[i] -= 0.1 * (g + 0.9 * buf[i])
            }
        }
        #expect(abs(Double(p.value[0]) - w[0]) < 1e-6 && abs(Double(p.value[1]) - w[1]) < 1e-6)
    }

    @Test func maskedWeightsStayZeroThroughSteps() {
        let p = Parameter(Tensor(shape: [3], values: [1, 2, 3]))
        p.mask = Tensor(shape: [3], values: [1, 0, 1])
        p.applyMask()
        let opt = SGD(parameters: [p], learningRate: 0.1)
        p.grad.fill(1)
        opt.step()
        #expect(p.value[1] == 0)
        #expect(p.value[0] != 1)
    }

    @Test func learningRateSchedules() {
        let step = LRSchedule.step(milestones: [3, 6], gamma: 0.1)
        #expect(step.rate(base: 1, epoch: 2.9, totalEpochs: 10) == 1)
        #expect(abs(step.rate(base: 1, epoch: 3, totalEpochs: 10) - 0.1) < 1e-7)
        #expect(abs(step.rate(base: 1, epoch: 7, totalEpochs: 10) - 0.01) < 1e-7)
        #expect(abs(LRSchedule.cosine.rate(base: 1, epoch: 5, totalEpochs: 10) - 0.5) < 1e-6)
        #expect(LRSchedule.cosine.rate(base: 1, epoch: 0.5, totalEpochs: 10, warmupEpochs: 1) < 1)
    }
}
