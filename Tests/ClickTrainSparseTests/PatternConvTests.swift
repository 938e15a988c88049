import ClickTrainCore
@_spi(Testing) import ClickTrainSparse
import ClickTrainTestSupport
import ClickTrainCodegen
import Foundation
import Testing

enum MaskKind: CaseIterable, Sendable {
    /// The four 2x2 corner patterns (ClickTrain's generic pool).
    case corners
    /// Any of the 126 patterns keeping 4 of 9 taps (many patterns per channel in the
    /// grouped paths).
    case anyFourTaps
    /// Kernels keeping 1 to 9 taps (the generic per-tap tiles).
    case mixed
}

/// A ClickTrain-shaped mask: each kept kernel has a pattern of `kind`, a `removed`
/// fraction of kernels is dropped, and filter 0 loses every kernel.
func patternMask(_ shape: [Int], removed: Double, seed: UInt64, kind: MaskKind = .corners) -> Tensor {
    let corners: [[Int]] = [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]]
    var rng = RNG(seed: seed)
    let m = Tensor(shape: shape)
    for k in 0..<(shape[0] * shape[1]) {
        if k < shape[1] || Double(rng.uniform()) < removed { continue }
        switch kind {
        case .corners:
            for t in corners[Int(rng.next() % 4)] { m[k * 9 + t] = 1 }
        case .anyFourTaps, .mixed:
            var taps = Array(0..<9)
            taps.shuffle(using: &rng)
            let keep = kind == .mixed ? 1 + Int(rng.next() % 9) : 4
            for t in taps.prefix(keep) { m[k * 9 + t] = 1 }
        }
    }
    return m
}

/// A pattern-masked conv with random input, output gradient, bias and residual, and the
/// dense reference's results on the masked weight (`seed` … `seed + 5`).
struct MaskedConvCase {
    let g: ConvGeometry
    let x: Tensor, dy: Tensor, bias: Tensor, res: Tensor
    let pw: PatternWeights
    /// conv + bias; max(0, conv + bias + residual); the reference gradients.
    let ref: Tensor, fused: Tensor
    let refGrad: (dx: Tensor, dw: Tensor, db: Tensor)

    init(_ a: (Int, Int, Int, Int, Int, Int), removed: Double, seed: UInt64) {
        let (n, c, h, w, k, s) = a
        g = ConvGeometry(batch: n, inChannels: c, height: h, width: w, outChannels: k, kernelSize: 3, stride: s, padding: 1)
        x = Reference.random(g.inputShape, seed: seed)
        dy = Reference.random(g.outputShape, seed: seed + 1)
        let wt = Reference.random(g.weightShape, seed: seed + 2)
        bias = Reference.random([k], seed: seed + 3)
        res = Reference.random(g.outputShape, seed: seed + 4)
        let m = patternMask(g.weightShape, removed: removed, seed: seed + 5)
        for i in 0..<wt.count { wt[i] *= m[i] }
        pw = PatternWeights(weight: wt, mask: m)
        ref = Reference.conv2d(x, wt, bias: bias, stride: s, padding: 1)
        fused = Tensor(shape: g.outputShape)
        for i in 0..<fused.count { fused[i] = max(0, ref[i] + res[i]) }
        refGrad = Reference.conv2dBackward(x, wt, dy, stride: s, padding: 1)
    }

    /// The kept weights' gradients `dv` (in `pw.value`'s order) against the reference.
    func expectKeptWeightGradients(_ dv: [Float], _ label: String) {
        var i = 0
        for f in 0..<g.outChannels {
            for e in Int(pw.rowStart[f])..<Int(pw.rowStart[f + 1]) {
                for t in Int(pw.tapStart[e])..<Int(pw.tapStart[e + 1]) {
                    let want = refGrad.dw[(f * g.inChannels + Int(pw.channel[e])) * 9 + Int(pw.tap[t])]
                    #expect(abs(dv[i] - want) <= 1e-4 * max(1, abs(want)), "weight gradient, \(label)")
                    i += 1
                }
            }
        }
    }
}

let patternShapes = [(1, 16, 8, 8, 16, 1), (5, 8, 9, 7, 12, 2), (2, 32, 6, 6, 64, 1), (3, 3, 11, 11, 5, 2),
                     (2, 8, 20, 18, 16, 2), (2, 16, 32, 32, 16, 1), (1, 4, 28, 28, 8, 2), (2, 6, 14, 14, 8, 1),
                     (2, 8, 16, 32, 8, 2), (2, 8, 16, 16, 16, 2)]

@Suite("Pattern-sparse convolution")
struct PatternConvTests {
    @Test(arguments: patternShapes, MaskKind.allCases)
    func forwardEqualsDenseOnMaskedWeights(_ a: (Int, Int, Int, Int, Int, Int), _ kind: MaskKind) {
        let (n, c, h, w, k, s) = a
        let g = ConvGeometry(batch: n, inChannels: c, height: h, width: w, outChannels: k, kernelSize: 3, stride: s,
                             padding: 1)
        let x = Reference.random(g.inputShape, seed: 1)
        let wt = Reference.random(g.weightShape, seed: 2)
        let m = patternMask(g.weightShape, removed: 0.6, seed: 3, kind: kind)
        for i in 0..<wt.count { wt[i] *= m[i] }
        let bias = Reference.random([k], seed: 4)
        let pw = PatternWeights(weight: wt)
        #expect(pw.dense().array == wt.array)
        #expect(pw.nonZeros == (0..<wt.count).filter { wt[$0] != 0 }.count)
        #expect(pw.rowStart[1] == 0)  // filter 0 lost every kernel
        let ref = Reference.conv2d(x, wt, bias: bias, stride: s, padding: 1)
        let y = Tensor(shape: g.outputShape)
        y.fill(7)  // must be overwritten
        let kernel = PatternConvKernel(g)
        kernel.forward(input: x, weights: pw, bias: bias, output: y)
        #expect(Reference.maxRelativeError(y, ref) <= 1e-5)
        // Residual and ReLU fused into the tiles' stores (and the partial tile's copy-out).
        let res = Reference.random(g.outputShape, seed: 5)
        kernel.forward(input: x, weights: pw, bias: bias, output: y, relu: true, residual: res)
        let fused = Tensor(shape: g.outputShape)
        for i in 0..<fused.count { fused[i] = max(0, ref[i] + res[i]) }
        #expect(Reference.maxRelativeError(y, fused) <= 1e-5, "residual + ReLU")
        kernel.forward(input: x, weights: pw, bias: bias, output: y, relu: true)
        for i in 0..<fused.count { fused[i] = max(0, ref[i]) }
        #expect(Reference.maxRelativeError(y, fused) <= 1e-5, "ReLU")
    }

    /// 8x8 outputs with 4-tap kernels run forward, weight gradient and (stride 1) input
    /// gradient on the (channel, pattern) or (filter, pattern) groups, larger planes their
    /// weight gradient on the same groups over the whole plane (groups of 1 to 8 kernels with
    /// 40 filters; 8x8 planes over up to four images per pass, batches of 9 and 11 leaving
    /// passes of 1-4 images), and, the plane paths turned off (`PatternStrategy`), stride-1
    /// weight gradients with OW = 16 or 32 on vertical tap pairs; all these paths off, the
    /// per-tap tiles: each equal to the dense
    /// reference (64 channels: several kernels per group). On builds without AVX-512 the
    /// strategy chooses the per-tap tiles throughout.
    @Test(arguments: [(2, 64, 8, 8, 32, 1, true), (2, 16, 16, 16, 24, 2, true), (2, 8, 16, 16, 12, 1, true),
                      (1, 8, 32, 32, 8, 1, true), (2, 8, 16, 16, 12, 1, false), (1, 8, 32, 32, 8, 1, false),
                      (2, 6, 32, 32, 40, 2, true), (1, 8, 16, 16, 40, 1, true), (11, 16, 8, 8, 40, 1, true),
                      (11, 16, 8, 8, 40, 1, false), (9, 8, 16, 16, 40, 2, true)])
    func groupedAndPerTapPathsAgree(_ a: (Int, Int, Int, Int, Int, Int, Bool)) {
        let (n, c, h, w, k, s, plane) = a
        let t = MaskedConvCase((n, c, h, w, k, s), removed: 0.6, seed: 11)
        let (g, x, dy, bias, res, pw, fused, refGrad) = (t.g, t.x, t.dy, t.bias, t.res, t.pw, t.fused, t.refGrad)
        for grouped in [true, false] {
            let kernel = PatternConvKernel(g)
            if !grouped {
                kernel.strategy.groupedForward = false
                kernel.strategy.groupedInputGradient = false
                kernel.strategy.pairedWeightGradient = false
            }
            if !(grouped && plane) {
                kernel.strategy.planeWeightGradient = false
                kernel.strategy.smallPlaneImagesPerPass = 1
            }
            let y = Tensor(shape: g.outputShape)
            y.fill(7)
            kernel.forward(input: x, weights: pw, bias: bias, output: y, relu: true, residual: res)
            #expect(Reference.maxRelativeError(y, fused) <= 1e-5, "forward, grouped \(grouped)")
            var dv = [Float](repeating: 0, count: pw.nonZeros)
            let dx = Tensor(shape: g.inputShape)
            dx.fill(3)  // must be overwritten
            kernel.backward(input: x, weights: pw, gradOutput: dy, gradInput: dx, gradValues: &dv, gradBias: nil)
            #expect(Reference.maxRelativeError(dx, refGrad.dx) <= 1e-5, "input gradient, grouped \(grouped)")
            t.expectKeptWeightGradients(dv, "grouped \(grouped)")
        }
    }

    /// Stride 2 with OW in {8, 16, 32, 64}: the input gradient by source (four parity planes in
    /// registers, kernels read once per shift class, the last 64 positions from the tail
    /// buffer), with dx stored through the caches and streamed around them, and by plane
    /// (that path turned off) all equal the dense reference; 32x32 and 16x16 inputs (four
    /// tiles of 64 and one), corner and arbitrary patterns.
    @Test(arguments: [(2, 16, 32, 32, 24, 2), (3, 8, 16, 16, 16, 2), (1, 4, 64, 64, 8, 2)], MaskKind.allCases)
    func stride2InputGradientBySourceAndByPlaneAgree(_ a: (Int, Int, Int, Int, Int, Int), _ kind: MaskKind) {
        let (n, c, h, w, k, s) = a
        let g = ConvGeometry(batch: n, inChannels: c, height: h, width: w, outChannels: k, kernelSize: 3, stride: s,
                             padding: 1)
        let x = Reference.random(g.inputShape, seed: 21), dy = Reference.random(g.outputShape, seed: 22)
        let wt = Reference.random(g.weightShape, seed: 23)
        let m = patternMask(g.weightShape, removed: 0.5, seed: 24, kind: kind)
        for i in 0..<wt.count { wt[i] *= m[i] }
        let pw = PatternWeights(weight: wt, mask: m)
        let ref = Reference.conv2dBackward(x, wt, dy, stride: s, padding: 1)
        for (bySource, streaming) in [(true, false), (true, true), (false, false)] {
            let kernel = PatternConvKernel(g)
            #expect(kernel.strategy.fusedStride2InputGradient)
            kernel.strategy.fusedStride2InputGradient = bySource
            kernel.strategy.streamingMinBytes = streaming ? 0 : .max
            let dx = Tensor(shape: g.inputShape)
            dx.fill(3)  // must be overwritten
            kernel.backward(input: x, weights: pw, gradOutput: dy, gradInput: dx, gradValues: nil, gradBias: nil)
            #expect(Reference.maxRelativeError(dx, ref.dx) <= 1e-5, "input gradient, by source \(bySource), streamed \(streaming)")
        }
    }

    @Test func sameStructureNewValuesReusesThePlanCorrectly() {
        let g = ConvGeometry(batch: 2, inChannels: 16, height: 10, width: 10, outChannels: 8, kernelSize: 3, stride: 1,
                             padding: 1)
        let x = Reference.random(g.inputShape, seed: 11)
        let m = patternMask(g.weightShape, removed: 0.4, seed: 12, kind: .anyFourTaps)
        let kernel = PatternConvKernel(g)
        var pw = PatternWeights(weight: Reference.random(g.weightShape, seed: 13), mask: m)
        for step in 0..<3 {
            // A new weight with the same mask: the cached offsets, new values.
            let wt = Reference.random(g.weightShape, seed: 20 + UInt64(step))
            for i in 0..<wt.count { wt[i] *= m[i] }
            pw = pw.refreshed(from: wt)
            #expect(pw.dense().array == wt.array)
            let y = Tensor(shape: g.outputShape)
            kernel.forward(input: x, weights: pw, bias: nil, output: y)
            #expect(Reference.maxRelativeError(y, Reference.conv2d(x, wt, bias: nil, stride: 1, padding: 1)) <= 1e-5)
        }
        // A different structure through the same kernel gets a new plan.
        let m2 = patternMask(g.weightShape, removed: 0.7, seed: 14, kind: .mixed)
        let w2 = Reference.random(g.weightShape, seed: 15)
        for i in 0..<w2.count { w2[i] *= m2[i] }
        let y = Tensor(shape: g.outputShape)
        kernel.forward(input: x, weights: PatternWeights(weight: w2, mask: m2), bias: nil, output: y)
        #expect(Reference.maxRelativeError(y, Reference.conv2d(x, w2, bias: nil, stride: 1, padding: 1)) <= 1e-5)
    }

    @Test func generatedSourceIsUpToDate() throws {
        // Regenerating the register tiles must change nothing (run `swift run
        // generate-kernels` after editing the generator).
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let path = root.appendingPathComponent("Sources/ClickTrainSparse/Generated/PatternTiles.swift")
        let committed = try String(contentsOf: path, encoding: .utf8)
        #expect(committed == PatternKernelSource.source(), "Generated/PatternTiles.swift is stale: run `swift run generate-kernels`")
    }

    /// The paths each geometry runs: by source for even stride-2 inputs with OW in
    /// {8, 16, 32, 64}; the 64-position planes' grouped paths together (stride 1 for the input
    /// gradient), larger planes' plane and pair paths together (both need the 16-lane partial
    /// sums of AVX-512 builds).
    @Test func strategyFollowsTheGeometry() {
        func strategy(_ c: Int, _ h: Int, _ w: Int, _ k: Int, _ s: Int) -> PatternStrategy {
            PatternStrategy(ConvGeometry(batch: 2, inChannels: c, height: h, width: w, outChannels: k, kernelSize: 3,
                                         stride: s, padding: 1))
        }
        for (c, h, w, k) in [(16, 32, 32, 32), (32, 16, 16, 64), (4, 64, 64, 8), (8, 16, 32, 8)] {
            #expect(strategy(c, h, w, k, 2).fusedStride2InputGradient, "\(c)->\(k) \(h)x\(w) stride 2")
        }
        for (c, h, w, k, s) in [(8, 9, 7, 12, 2), (8, 20, 18, 16, 2), (4, 28, 28, 8, 2), (16, 32, 32, 16, 1)] {
            #expect(!strategy(c, h, w, k, s).fusedStride2InputGradient, "\(c)->\(k) \(h)x\(w) stride \(s)")
        }
        let small = strategy(64, 8, 8, 64, 1), smallStride2 = strategy(32, 16, 16, 64, 2)
        for st in [small, smallStride2] {
            #expect((st.smallPlaneImagesPerPass > 1) == st.groupedForward)
            #expect(!st.planeWeightGradient && !st.pairedWeightGradient)
        }
        #expect(small.groupedInputGradient == small.groupedForward && !smallStride2.groupedInputGradient)
        let plane = strategy(16, 32, 32, 16, 1)
        #expect(!plane.groupedForward && !plane.groupedInputGradient)
        #expect(plane.smallPlaneImagesPerPass == 1 && plane.pairedWeightGradient == plane.planeWeightGradient)
        #expect(!strategy(16, 32, 32, 32, 2).pairedWeightGradient)
        #expect(small.streamingMinBytes == 4 << 20)
    }

    @Test func csrViewMatchesTheIm2colMatrix() {
        let wt = Reference.random([4, 3, 3, 3], seed: 5)
        let m = patternMask(wt.shape, removed: 0.3, seed: 6)
        for i in 0..<wt.count { wt[i] *= m[i] }
        let (rp, col, val) = PatternWeights(weight: wt).csr()
        #expect(rp.count == 5)
        for f in 0..<4 {
            var dense = [Float](repeating: 0, count: 27)
            for e in Int(rp[f])..<Int(rp[f + 1]) { dense[Int(col[e])] = val[e] }
            #expect(dense == Array(wt.array[(f * 27)..<((f + 1) * 27)]))
            #expect(Array(col[Int(rp[f])..<Int(rp[f + 1])]) == col[Int(rp[f])..<Int(rp[f + 1])].sorted())
        }
    }
}

@Suite("Pattern-sparse convolution, backward")
struct PatternConvBackwardTests {
    /// Planes of 1024 or more floats: the fill reads 8 channels side by side (12 and 20
    /// channels leave a partial group; stride 2 with OW = 16 and 24, the 16- and 8-wide row
    /// loops), and the forward output and stride-1 input gradient stored through the caches and
    /// streamed around them (`PatternStrategy.streamingMinBytes`) all equal the dense reference.
    @Test(arguments: [(2, 12, 32, 32, 16, 2), (1, 20, 32, 48, 8, 2), (2, 12, 32, 32, 8, 1), (1, 20, 32, 48, 16, 1)])
    func channelGroupedFillAndStreamedOutputsAgree(_ a: (Int, Int, Int, Int, Int, Int)) {
        let t = MaskedConvCase(a, removed: 0.5, seed: 31)
        let (g, x, dy, bias, res, pw, ref, fused) = (t.g, t.x, t.dy, t.bias, t.res, t.pw, t.ref, t.fused)
        for streaming in [false, true] {
            let kernel = PatternConvKernel(g)
            kernel.strategy.streamingMinBytes = streaming ? 0 : .max
            let y = Tensor(shape: g.outputShape)
            y.fill(7)  // must be overwritten
            kernel.forward(input: x, weights: pw, bias: bias, output: y)
            #expect(Reference.maxRelativeError(y, ref) <= 1e-5, "forward, streamed \(streaming)")
            kernel.forward(input: x, weights: pw, bias: bias, output: y, relu: true, residual: res)
            #expect(Reference.maxRelativeError(y, fused) <= 1e-5, "forward + residual + ReLU, streamed \(streaming)")
            var dv = [Float](repeating: 0, count: pw.nonZeros)
            let dx = Tensor(shape: g.inputShape)
            dx.fill(3)
            kernel.backward(input: x, weights: pw, gradOutput: dy, gradInput: dx, gradValues: &dv, gradBias: nil)
            #expect(Reference.maxRelativeError(dx, t.refGrad.dx) <= 1e-5, "input gradient, streamed \(streaming)")
            t.expectKeptWeightGradients(dv, "streamed \(streaming)")
        }
    }

    @Test(arguments: patternShapes, MaskKind.allCases)
    func gradientsEqualDenseOnMaskedWeights(_ a: (Int, Int, Int, Int, Int, Int), _ kind: MaskKind) {
        let (n, c, h, w, k, s) = a
        let g = ConvGeometry(batch: n, inChannels: c, height: h, width: w, outChannels: k, kernelSize: 3, stride: s,
                             padding: 1)
        let x = Reference.random(g.inputShape, seed: 7)
        let wt = Reference.random(g.weightShape, seed: 8)
        let m = patternMask(g.weightShape, removed: 0.5, seed: 9, kind: kind)
        for i in 0..<wt.count { wt[i] *= m[i] }
        let dy = Reference.random(g.outputShape, seed: 10)
        let pw = PatternWeights(weight: wt, mask: m)
        let ref = Reference.conv2dBackward(x, wt, dy, stride: s, padding: 1)
        var dv = [Float](repeating: 0, count: pw.nonZeros)
        let kernel = PatternConvKernel(g)
        let dx = Tensor(shape: g.inputShape), db = Tensor(shape: [k])
        dx.fill(3)  // must be overwritten
        kernel.backward(input: x, weights: pw, gradOutput: dy, gradInput: dx, gradValues: &dv, gradBias: db)
        #expect(Reference.maxRelativeError(dx, ref.dx) <= 1e-5, "input gradient")
        #expect(Reference.maxRelativeError(db, ref.db) <= 1e-5, "bias gradient")
        // Input gradient alone, then weight gradient alone: the same results.
        let dx2 = Tensor(shape: g.inputShape)
        kernel.backward(input: x, weights: pw, gradOutput: dy, gradInput: dx2, gradValues: nil, gradBias: nil)
        #expect(dx2.array == dx.array)
        var dv2 = [Float](repeating: 0, count: pw.nonZeros)
        kernel.backward(input: x, weights: pw, gradOutput: dy, gradInput: nil, gradValues: &dv2, gradBias: nil)
        #expect(dv2 == dv)
        // The kept weights' gradients, scattered back to [K, C, 3, 3], equal the dense
        // gradient on the mask; the pruned ones are never computed.
        let gradAsWeight = PatternWeights(weight: wt, mask: m)
        let dw = Tensor(shape: g.weightShape)
        var v = 0
        for f in 0..<k {
            for e in Int(gradAsWeight.rowStart[f])..<Int(gradAsWeight.rowStart[f + 1]) {
                for i in Int(gradAsWeight.tapStart[e])..<Int(gradAsWeight.tapStart[e + 1]) {
                    dw[(f * c + Int(gradAsWeight.channel[e])) * 9 + Int(gradAsWeight.tap[i])] = dv[v]
                    v += 1
                }
            }
        }
        let refMasked = Tensor(shape: g.weightShape)
        for i in 0..<dw.count { refMasked[i] = ref.dw[i] * m[i] }
        #expect(Reference.maxRelativeError(dw, refMasked) <= 1e-5, "weight gradient")
    }
}
