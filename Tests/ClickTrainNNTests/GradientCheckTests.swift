import ClickTrainCore
import ClickTrainNN
import ClickTrainTestSupport
import Testing

/// Compares a layer's backward with central finite differences of L = Σ forward(x)·R,
/// on sampled entries of the input and of every parameter. Returns the failures.
func gradientCheck(_ layer: any Layer, input x: Tensor, seed: UInt64 = 7, samples: Int = 12,
                   h: Float = 1e-2, atol: Double = 2e-2, rtol: Double = 2e-2) -> [String] {
    let y0 = layer.forward(x)
    let r = Reference.random(y0.shape, seed: seed)
    let dx = layer.backward(r).clone()
    let params = layer.parameters()
    let grads = params.map { $0.grad.clone() }
    func loss() -> Double { Reference.dot(layer.forward(x), r) }
    var failures: [String] = []
    var rng = RNG(seed: seed)
    func check(_ t: Tensor, _ analytic: Tensor, _ what: String) {
        for _ in 0..<min(samples, t.count) {
            let i = Int(rng.next() % UInt64(t.count))
            let num = Reference.numericGradient(t, i, h: h, loss: loss)
            let ana = Double(analytic[i])
            if abs(num - ana) > atol + rtol * abs(num) {
                failures.append("\(what)[\(i)]: backward \(ana), finite difference \(num)")
            }
        }
    }
    if layer.needsInputGradient { check(x, dx, "input") }
    for (p, g) in zip(params, grads) { check(p.value, g, p.name.isEmpty ? "param\(p.shape)" : p.name) }
    return failures
}

/// Inputs whose entries keep away from ReLU/max-pool kinks: a shuffled grid of values
/// 0.05 apart, none within 0.025 of zero, so a ±0.01 step never changes an arg-max.
func kinkFreeInput(_ shape: [Int], seed: UInt64) -> Tensor {
    let n = shape.reduce(1, *)
    var values = (0..<n).map { Float($0 - n / 2) * 0.05 + 0.025 }
    var rng = RNG(seed: seed)
    values.shuffle(using: &rng)
    return Tensor(shape: shape, values: values)
}

@Suite("Layer backward against finite differences")
struct GradientCheckTests {
    @Test(arguments: [(1, 3, 1, 0), (5, 3, 2, 1), (2, 1, 1, 1), (5, 1, 2, 0)])
    func conv2d(_ args: (Int, Int, Int, Int)) {
        let (n, k, s, p) = args
        var rng = RNG(seed: 3)
        let layer = Conv2d(3, 4, kernelSize: k, stride: s, padding: p, bias: true, rng: &rng)
        layer.assignNames()
        #expect(gradientCheck(layer, input: Reference.random([n, 3, 7, 5], seed: 1)) == [])
    }

    @Test(arguments: [false, true])
    func residualAndConcat(_ reluAfter: Bool) {
        var rng = RNG(seed: 4)
        let body = Sequential(indexed: [Conv2d(3, 4, kernelSize: 3, padding: 1, rng: &rng),
                                        Conv2d(4, 4, kernelSize: 3, padding: 1, rng: &rng)])
        let residual = Residual(body: body, shortcut: Conv2d(3, 4, kernelSize: 1, rng: &rng), reluAfter: reluAfter)
        let model = Sequential([("res", residual), ("cat", Concat([Conv2d(4, 2, kernelSize: 3, padding: 1, rng: &rng),
                                                                   Residual(body: ReLU(), reluAfter: false)]))])
        model.assignNames()
        #expect(model.outputShape(for: [2, 3, 5, 4]) == [2, 6, 5, 4])
        #expect(gradientCheck(model, input: kinkFreeInput([2, 3, 5, 4], seed: 5), samples: 20) == [])
    }

    @Test(arguments: [1, 5])
    func batchNormTraining(_ n: Int) {
        let layer = BatchNorm2d(3)
        for i in 0..<3 { layer.weight.value[i] = 0.5 + Float(i); layer.bias.value[i] = Float(i) * 0.1 }
        #expect(gradientCheck(layer, input: Reference.random([n, 3, 3, 5], seed: 2), atol: 5e-2) == [])
    }

    @Test func batchNormEval() {
        let layer = BatchNorm2d(4)
        for i in 0..<4 { layer.runningMean[i] = Float(i) * 0.2; layer.runningVar[i] = 0.5 + Float(i) }
        layer.train(false)
        let x = Reference.random([5, 4, 3, 3], seed: 5)
        let y = layer.forward(x)
        // y = (x - mean)/sqrt(var + eps)
        let i = 2 * 36 + 3 * 9 + 4
        let expected = (x[i] - 0.6) / (3.5 + 1e-5).squareRoot()
        #expect(abs(y[i] - expected) < 1e-5)
        #expect(gradientCheck(layer, input: x).filter { $0.hasPrefix("input") } == [])
    }

    @Test func batchNormTrainingForwardMatchesNaive() {
        let layer = BatchNorm2d(3)
        for i in 0..<3 { layer.weight.value[i] = 0.5 + Float(i); layer.bias.value[i] = Float(i) * 0.1 - 0.1 }
        let x = Reference.random([5, 3, 3, 5], seed: 12)
        let y = layer.forward(x)
        for c in 0..<3 {
            var vals: [Double] = []
            for n in 0..<5 { for i in 0..<15 { vals.append(Double(x[(n * 3 + c) * 15 + i])) } }
            let mean = vals.reduce(0, +) / Double(vals.count)
            let variance = vals.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(vals.count)
            for n in 0..<5 { for i in 0..<15 {
                let idx = (n * 3 + c) * 15 + i
                let expected = (Double(x[idx]) - mean) / (variance + 1e-5).squareRoot() * Double(layer.weight.value[c])
                    + Double(layer.bias.value[c])
                #expect(abs(Double(y[idx]) - expected) < 1e-5)
            } }
        }
    }

    @Test func linearForwardMatchesNaive() {
        var rng = RNG(seed: 13)
        let layer = Linear(7, 3, rng: &rng)
        let x = Reference.random([5, 7], seed: 14)
        let y = layer.forward(x)
        for n in 0..<5 { for o in 0..<3 {
            var s = Double(layer.bias!.value[o])
            for i in 0..<7 { s += Double(x[n * 7 + i]) * Double(layer.weight.value[o * 7 + i]) }
            #expect(abs(Double(y[n * 3 + o]) - s) < 1e-5)
        } }
    }

    @Test func batchNormRunningStatistics() {
        let layer = BatchNorm2d(1)
        let x = Tensor(shape: [2, 1, 1, 2], values: [1, 2, 3, 6])
        _ = layer.forward(x)
        // mean 3, unbiased var = (4+1+0+9)/3
        #expect(abs(layer.runningMean[0] - 0.3) < 1e-6)
        #expect(abs(layer.runningVar[0] - (0.9 + 0.1 * 14 / 3)) < 1e-5)
        #expect(layer.numBatchesTracked.value == 1)
    }

    @Test func reluAndPools() {
        let x = kinkFreeInput([5, 2, 7, 6], seed: 4)
        #expect(gradientCheck(ReLU(), input: x) == [])
        #expect(gradientCheck(MaxPool2d(kernelSize: 2), input: x) == [])
        #expect(gradientCheck(MaxPool2d(kernelSize: 3, stride: 2, padding: 1), input: x) == [])
        #expect(gradientCheck(AvgPool2d(kernelSize: 2), input: x) == [])
        #expect(gradientCheck(AvgPool2d(kernelSize: 3, stride: 2, padding: 1), input: x) == [])
        #expect(gradientCheck(GlobalAvgPool(), input: x) == [])
    }

    @Test func poolForwardValues() {
        let x = Tensor(shape: [1, 1, 3, 3], values: [1, 2, 3, 4, 5, 6, 7, 8, 9])
        #expect(MaxPool2d(kernelSize: 2, stride: 1).forward(x).array == [5, 6, 8, 9])
        #expect(AvgPool2d(kernelSize: 2, stride: 1).forward(x).array == [3, 4, 6, 7])
        // count_include_pad: corner window of 3x3/2 pad 1 sees 1,2,4,5 over 9 cells.
        #expect(abs(AvgPool2d(kernelSize: 3, stride: 2, padding: 1).forward(x)[0] - 12 / 9) < 1e-6)
        #expect(GlobalAvgPool().forward(x).array == [5])
    }

    /// The 2x2 stride-2 path against a naive loop, ties included (the first maximum in
    /// window order wins) and odd sizes (the last row and column dropped, floor mode); the
    /// backward pass sends each gradient to that maximum.
    @Test func maxPool2x2MatchesNaiveLoop() {
        for (h, w) in [(8, 8), (7, 9), (2, 2)] {
            var rng = RNG(seed: UInt64(h * w))
            let x = Tensor(shape: [3, 2, h, w])
            for i in 0..<x.count { x[i] = Float(rng.next() % 4) }  // many ties
            let pool = MaxPool2d(kernelSize: 2)
            let y = pool.forward(x)
            let oh = h / 2, ow = w / 2
            #expect(y.shape == [3, 2, oh, ow])
            let dy = Tensor(shape: y.shape)
            for i in 0..<dy.count { dy[i] = Float(i + 1) }
            let dx = pool.backward(dy)
            var expectedDx = [Float](repeating: 0, count: x.count)
            for p in 0..<6 {
                for oy in 0..<oh {
                    for ox in 0..<ow {
                        var best = -Float.infinity, at = -1
                        for ky in 0..<2 { for kx in 0..<2 {
                            let i = p * h * w + (2 * oy + ky) * w + 2 * ox + kx
                            if x[i] > best { best = x[i]; at = i }
                        } }
                        let o = (p * oh + oy) * ow + ox
                        #expect(y[o] == best)
                        expectedDx[at] += dy[o]
                    }
                }
            }
            #expect(dx.array == expectedDx)
        }
    }

    @Test func linear() {
        var rng = RNG(seed: 9)
        let layer = Linear(7, 3, rng: &rng)
        #expect(gradientCheck(layer, input: Reference.random([5, 7], seed: 1)) == [])
        let l1 = Linear(7, 3, rng: &rng)
        #expect(gradientCheck(l1, input: Reference.random([1, 7], seed: 2)) == [])
    }

    @Test func residualBlocks() {
        var rng = RNG(seed: 11)
        let basic = BasicBlock(4, 4, stride: 1, rng: &rng)
        let down = BasicBlock(3, 6, stride: 2, rng: &rng)
        let bottle = Bottleneck(8, width: 2, stride: 2, rng: &rng)
        for b in [basic, down, bottle] as [any Layer] { b.assignNames() }
        // A small step keeps the inner ReLUs on one side of their kinks.
        #expect(gradientCheck(basic, input: Reference.random([2, 4, 5, 5], seed: 1), h: 1e-3, atol: 3e-2) == [])
        #expect(gradientCheck(down, input: Reference.random([2, 3, 6, 6], seed: 2), h: 1e-3, atol: 3e-2) == [])
        #expect(gradientCheck(bottle, input: Reference.random([2, 8, 5, 5], seed: 3), h: 1e-3, atol: 3e-2) == [])
    }
}
