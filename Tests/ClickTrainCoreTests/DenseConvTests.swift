import ClickTrainCore
import ClickTrainTestSupport
import Testing

struct ConvCase: CustomStringConvertible, Sendable {
    var n, c, h, w, k, ks, stride, pad: Int
    var bias: Bool
    var description: String { "N\(n) C\(c) \(h)x\(w) K\(k) k\(ks) s\(stride) p\(pad) bias:\(bias)" }
}

let convCases: [ConvCase] = [
    ConvCase(n: 1, c: 3, h: 7, w: 7, k: 4, ks: 3, stride: 1, pad: 1, bias: false),
    ConvCase(n: 5, c: 3, h: 9, w: 7, k: 5, ks: 3, stride: 2, pad: 1, bias: true),
    ConvCase(n: 2, c: 16, h: 8, w: 8, k: 32, ks: 3, stride: 2, pad: 1, bias: false),
    ConvCase(n: 5, c: 6, h: 5, w: 5, k: 7, ks: 1, stride: 1, pad: 0, bias: true),
    ConvCase(n: 1, c: 8, h: 11, w: 11, k: 16, ks: 1, stride: 2, pad: 0, bias: false),
    ConvCase(n: 2, c: 1, h: 13, w: 13, k: 6, ks: 5, stride: 1, pad: 2, bias: true),
    ConvCase(n: 3, c: 17, h: 6, w: 6, k: 17, ks: 3, stride: 1, pad: 0, bias: false),
]

@Suite("Dense convolution (oneDNN) against naive loops")
struct DenseConvTests {
    @Test(arguments: convCases)
    func forwardAndBackwardMatchReference(_ t: ConvCase) {
        let g = ConvGeometry(batch: t.n, inChannels: t.c, height: t.h, width: t.w, outChannels: t.k,
                             kernelSize: t.ks, stride: t.stride, padding: t.pad)
        let x = Reference.random(g.inputShape, seed: 1)
        let w = Reference.random(g.weightShape, seed: 2, scale: 0.5)
        let b: Tensor? = t.bias ? Reference.random([t.k], seed: 3) : nil
        let kernel = DenseConv2dKernel(g, bias: t.bias)
        let y = Tensor(shape: g.outputShape)
        kernel.forward(input: x, weight: w, bias: b, output: y)
        let yRef = Reference.conv2d(x, w, bias: b, stride: t.stride, padding: t.pad)
        #expect(Reference.maxRelativeError(y, yRef) < 1e-5, "forward \(t)")

        let dy = Reference.random(g.outputShape, seed: 4)
        let dx = Tensor(shape: g.inputShape), dw = Tensor(shape: g.weightShape)
        let db: Tensor? = t.bias ? Tensor(shape: [t.k]) : nil
        kernel.backward(input: x, weight: w, gradOutput: dy, gradInput: dx, gradWeight: dw, gradBias: db)
        let ref = Reference.conv2dBackward(x, w, dy, stride: t.stride, padding: t.pad)
        #expect(Reference.maxRelativeError(dx, ref.dx) < 1e-5, "input gradient \(t)")
        #expect(Reference.maxRelativeError(dw, ref.dw) < 1e-5, "weight gradient \(t)")
        if let db { #expect(Reference.maxRelativeError(db, ref.db) < 1e-5, "bias gradient \(t)") }

        // Weight gradient alone (no input gradient, as for a first layer) gives the same.
        let dw2 = Tensor(shape: g.weightShape)
        kernel.forward(input: x, weight: w, bias: b, output: y)
        kernel.backward(input: x, weight: w, gradOutput: dy, gradInput: nil, gradWeight: dw2, gradBias: db)
        #expect(Reference.maxRelativeError(dw2, ref.dw) < 1e-5, "weight gradient without input gradient \(t)")
    }
}
