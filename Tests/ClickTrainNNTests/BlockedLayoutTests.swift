import ClickTrainCore
import ClickTrainNN
import ClickTrainTestSupport
import Testing

/// Activations kept in oneDNN's channel-blocked layout between layers give what NCHW gives.
@Suite("Channel-blocked activations")
struct BlockedLayoutTests {
    /// Stops a model from ever making blocked activations (only oneDNN convs make them).
    func plainOnly(_ model: any Layer) {
        for (_, l) in model.namedModules() { (l as? Conv2d)?.allowsBlockedOutput = false }
    }

    func blocked(_ x: Tensor) -> Tensor {
        var c = LayoutConverter()
        let b = c.converted(x, to: ChannelBlocking.size!)
        return b.clone()
    }

    func plain(_ x: Tensor) -> Tensor {
        var c = LayoutConverter()
        return c.plain(x).clone()
    }

    @Test func oneDNNChoosesABlockedLayoutHere() {
        #if arch(x86_64)
        #expect(ChannelBlocking.size == 8 || ChannelBlocking.size == 16)
        #endif
    }

    @Test func conversionRoundTripsAndPlacesChannelsInBlocks() throws {
        let b = try #require(ChannelBlocking.size)
        let x = Reference.random([2, 2 * b, 3, 5], seed: 1)
        let y = blocked(x)
        #expect(y.channelBlock == b)
        // Element (n=1, c=b+3, h=2, w=4) sits at [n][c / b][h][w][c % b].
        let blockedIndex = (((1 * 2 + 1) * 3 + 2) * 5 + 4) * b + 3
        #expect(y[blockedIndex] == x[((1 * 2 * b + b + 3) * 3 + 2) * 5 + 4])
        #expect(plain(y).array == x.array)
        #expect(y.array == x.array, "array gives NCHW order for blocked data too")
    }

    /// Batch norm on blocked input, training and evaluation, forward and backward.
    @Test(arguments: [true, false])
    func batchNormMatchesNCHW(_ training: Bool) throws {
        let b = try #require(ChannelBlocking.size)
        let x = Reference.random([3, 2 * b, 5, 7], seed: 2, scale: 3)
        let dy = Reference.random(x.shape, seed: 3)
        func run(_ input: Tensor, _ grad: Tensor) -> (y: Tensor, dx: Tensor, dg: [Float], db: [Float], mean: [Float]) {
            let bn = BatchNorm2d(2 * b)
            for c in 0..<(2 * b) { bn.weight.value[c] = 1 + Float(c) * 0.1; bn.bias.value[c] = Float(c) * 0.05 }
            bn.runningVar.fill(2)
            bn.isTraining = training
            bn.mayEmitBlocked = true
            let y = bn.forward(input).clone()
            let dx = bn.backward(grad).clone()
            return (y, dx, bn.weight.grad.array, bn.bias.grad.array, bn.runningMean.array)
        }
        let ref = run(x, dy), blk = run(blocked(x), blocked(dy))
        #expect(Reference.maxRelativeError(plain(blk.y), ref.y) < 1e-5)
        #expect(Reference.maxRelativeError(plain(blk.dx), ref.dx) < 1e-4)
        for (a, r) in zip(blk.dg + blk.db + blk.mean, ref.dg + ref.db + ref.mean) { #expect(abs(a - r) <= 1e-4 * max(1, abs(r))) }
    }

    /// Batch norm with the following ReLU in one pass gives what the two layers give, in
    /// both layouts (NCHW bit for bit), training and evaluation.
    @Test(arguments: [(0, true), (0, false), (8, true), (8, false)])
    func batchNormWithReLUMatchesTheTwoLayers(_ block: Int, _ training: Bool) throws {
        let c = 16
        let x0 = Reference.random([3, c, 5, 7], seed: 12, scale: 2), dy0 = Reference.random(x0.shape, seed: 13)
        let b = block == 0 ? 0 : try #require(ChannelBlocking.size)
        var conv = LayoutConverter()
        let x = b == 0 ? x0 : conv.converted(x0, to: b).clone(), dy = b == 0 ? dy0 : conv.converted(dy0, to: b).clone()
        func layers() -> (BatchNorm2d, ReLU) {
            let bn = BatchNorm2d(c), relu = ReLU()
            for i in 0..<c { bn.bias.value[i] = Float(i % 3) * 0.3 - 0.3 }
            bn.isTraining = training
            bn.mayEmitBlocked = true
            relu.mayEmitBlocked = true
            return (bn, relu)
        }
        let (bn1, relu1) = layers(), (bn2, relu2) = layers()
        let ySeparate = relu1.forward(bn1.forward(x)).array
        let dxSeparate = bn1.backward(relu1.backward(dy)).array
        let yFused = bn2.forward(x, then: relu2).array
        let dxFused = bn2.backward(dy).array
        if b == 0 {
            #expect(yFused == ySeparate && dxFused == dxSeparate)
            #expect(bn2.weight.grad.array == bn1.weight.grad.array && bn2.bias.grad.array == bn1.bias.grad.array)
        } else {
            #expect(zip(yFused, ySeparate).allSatisfy { abs($0 - $1) <= 1e-6 })
            #expect(zip(dxFused, dxSeparate).allSatisfy { abs($0 - $1) <= 1e-5 })
        }
        #expect(ySeparate.contains(0) && ySeparate.contains { $0 > 0 })
    }

    @Test func poolingMatchesNCHW() throws {
        let b = try #require(ChannelBlocking.size)
        let x = Reference.random([2, b, 6, 8], seed: 4)
        for layer in [{ MaxPool2d(kernelSize: 2) as any Layer }, { GlobalAvgPool() as any Layer }] {
            let ref = layer(), blk = layer()
            (blk as? MaxPool2d)?.mayEmitBlocked = true
            let y0 = ref.forward(x).clone(), y1 = blk.forward(blocked(x)).clone()
            let dy = Reference.random(y0.shape, seed: 5)
            let dx0 = ref.backward(dy).clone()
            let dx1 = blk.backward(y1.channelBlock == 0 ? dy : blocked(dy))
            #expect(plain(y1).array == y0.array)
            #expect(plain(dx1).array == dx0.array)
        }
    }

    /// Whole models: forward and backward with blocked activations between their oneDNN
    /// convs give the NCHW run's logits and gradients, and the blocked path is really taken;
    /// also with one conv on the pattern kernels (NCHW) between blocked neighbours.
    @Test(arguments: [("resnet20", nil), ("resnet20", "layer1.1.conv2"), ("vgg11", nil), ("vgg11", "features.4")])
    func modelMatchesNCHW(_ name: String, _ patternConv: String?) throws {
        let input = ModelInput(channels: 3, size: 16, classes: 10)
        let x = Reference.random([4, 3, 16, 16], seed: 6)
        func run(_ plainLayout: Bool) throws -> (logits: [Float], dx: [Float], grads: [[Float]], emitted: Bool) {
            let model = try ModelZoo.make(name, input: input, seed: 7)
            model.needsInputGradient = true
            if plainLayout { plainOnly(model) }
            if let patternConv {
                let conv = try #require(model.namedModules().first { $0.0 == patternConv }?.1 as? Conv2d)
                let mask = Tensor(shape: conv.weight.shape)
                for k in 0..<(mask.count / 9) { for t in [0, 1, 3, 4] { mask[k * 9 + t] = 1 } }
                conv.weight.mask = mask
                for i in 0..<mask.count { conv.weight.value[i] *= mask[i] }
            }
            let y = model.forward(x).clone()
            let dx = model.backward(Reference.random(y.shape, seed: 8)).clone()
            let stem = try #require(model.namedModules().first { $0.1 is Conv2d }?.1 as? Conv2d)
            return (y.array, dx.array, model.parameters().map { $0.grad.array }, stem.lastOutputBlock != 0)
        }
        let ref = try run(true), blk = try run(false)
        #expect(!ref.emitted && blk.emitted)
        /// The largest difference relative to the largest reference value (at least 0.05: a
        /// conv bias before batch norm has a gradient of zero but for rounding).
        func error(_ a: [Float], _ b: [Float]) -> Float {
            let scale = max(b.map(abs).max() ?? 1, 0.05)
            return zip(a, b).map { abs($0 - $1) }.max()! / scale
        }
        #expect(error(blk.logits, ref.logits) < 1e-4)
        #expect(error(blk.dx, ref.dx) < 1e-3)
        for (i, (g1, g0)) in zip(blk.grads, ref.grads).enumerated() { #expect(error(g1, g0) < 1e-3, "parameter \(i)") }
    }

    /// A conv on the pattern kernels gets NCHW from its producer (which converts once, for
    /// the block's shortcut too) rather than converting blocked input itself; the wiring
    /// follows the masks from one forward to the next.
    @Test func prunedConvsGetNCHWFromTheirProducers() throws {
        _ = try #require(ChannelBlocking.size)
        let model = try ModelZoo.make("resnet20", input: ModelInput(channels: 3, size: 16, classes: 10), seed: 9)
        let x = Reference.random([4, 3, 16, 16], seed: 10)
        let convs = model.namedModules().compactMap { m in (m.1 as? Conv2d).map { (m.0, $0) } }
        let stem = try #require(convs.first?.1)
        let first = try #require(convs.first { $0.0 == "layer1.0.conv1" }?.1)
        func step() -> [Float] {
            let y = model.forward(x)
            _ = model.backward(Reference.random(y.shape, seed: 11))
            return y.array
        }
        let dense = step()
        #expect(stem.lastOutputBlock != 0 && first.lastInputBlock != 0)
        for (name, c) in convs where name.hasPrefix("layer1.") {
            let mask = Tensor(shape: c.weight.shape)
            for i in 0..<mask.count { mask[i] = 1 }
            c.weight.mask = mask
        }
        let pruned = step()
        #expect(first.lastForwardUsedPatternKernels && first.lastInputBlock == 0)
        #expect(stem.lastOutputBlock != 0, "the stem's own batch norm still runs blocked")
        // Every weight kept: the same function, on other kernels and layouts.
        #expect(zip(pruned, dense).allSatisfy { abs($0 - $1) <= 1e-3 * max(1, abs($1)) })
        for (name, c) in convs where name.hasPrefix("layer1.") { c.weight.mask = nil }
        _ = step()
        #expect(!first.lastForwardUsedPatternKernels && first.lastInputBlock != 0)
    }

    /// A layer without blocked support between blocked-capable ones sees NCHW, and so does
    /// the caller of the container.
    @Test func userLayersAndCallersSeeNCHW() throws {
        let b = try #require(ChannelBlocking.size)
        final class Probe: Layer {
            var isTraining = true, needsInputGradient = true
            var seen: [Int] = []
            func forward(_ x: Tensor) -> Tensor { seen.append(x.channelBlock); return x }
            func backward(_ g: Tensor) -> Tensor { seen.append(g.channelBlock); return g }
            func outputShape(for input: [Int]) -> [Int] { input }
        }
        var rng = RNG(seed: 9)
        let probe = Probe()
        let model = Sequential(indexed: [Conv2d(3, b, kernelSize: 3, padding: 1, rng: &rng), BatchNorm2d(b),
                                         probe, Conv2d(b, b, kernelSize: 3, padding: 1, rng: &rng), ReLU()])
        let x = Reference.random([2, 3, 6, 6], seed: 10)
        let y = model.forward(x)
        #expect(y.channelBlock == 0)
        let dx = model.backward(Reference.random(y.shape, seed: 11))
        #expect(dx.channelBlock == 0)
        #expect(probe.seen == [0, 0])
    }
}

