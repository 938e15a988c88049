import ClickTrainCore

/// Naive reference kernels and checkers for the tests: plain loops in Double, written
/// for clarity, never for speed. Expected values come from here, not from the code
/// under test.
public enum Reference {
    /// Direct convolution, [N,C,H,W] * [K,C,k,k] (+ bias) → [N,K,OH,OW].
    public static func conv2d(_ x: Tensor, _ w: Tensor, bias: Tensor?, stride: Int, padding: Int) -> Tensor {
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], wd = x.shape[3]
        let k = w.shape[0], ks = w.shape[2]
        let oh = (h + 2 * padding - ks) / stride + 1, ow = (wd + 2 * padding - ks) / stride + 1
        let y = Tensor(shape: [n, k, oh, ow])
        for b in 0..<n { for f in 0..<k { for oy in 0..<oh { for ox in 0..<ow {
            var s = Double(bias?[f] ?? 0)
            for ch in 0..<c { for ky in 0..<ks { for kx in 0..<ks {
                let iy = oy * stride - padding + ky, ix = ox * stride - padding + kx
                if iy < 0 || iy >= h || ix < 0 || ix >= wd { continue }
                s += Double(x[((b * c + ch) * h + iy) * wd + ix]) * Double(w[((f * c + ch) * ks + ky) * ks + kx])
            } } }
            y[((b * k + f) * oh + oy) * ow + ox] = Float(s)
        } } } }
        return y
    }

    /// Input, weight and bias gradients of `conv2d` for upstream gradient `dy`.
    public static func conv2dBackward(_ x: Tensor, _ w: Tensor, _ dy: Tensor, stride: Int, padding: Int)
        -> (dx: Tensor, dw: Tensor, db: Tensor)
    {
        let n = x.shape[0], c = x.shape[1], h = x.shape[2], wd = x.shape[3]
        let k = w.shape[0], ks = w.shape[2], oh = dy.shape[2], ow = dy.shape[3]
        var dx = [Double](repeating: 0, count: x.count), dw = [Double](repeating: 0, count: w.count)
        var db = [Double](repeating: 0, count: k)
        for b in 0..<n { for f in 0..<k { for oy in 0..<oh { for ox in 0..<ow {
            let g = Double(dy[((b * k + f) * oh + oy) * ow + ox])
            db[f] += g
            for ch in 0..<c { for ky in 0..<ks { for kx in 0..<ks {
                let iy = oy * stride - padding + ky, ix = ox * stride - padding + kx
                if iy < 0 || iy >= h || ix < 0 || ix >= wd { continue }
                let xi = ((b * c + ch) * h + iy) * wd + ix, wi = ((f * c + ch) * ks + ky) * ks + kx
                dx[xi] += g * Double(w[wi])
                dw[wi] += g * Double(x[xi])
            } } }
        } } } }
        return (Tensor(shape: x.shape, values: dx.map(Float.init)), Tensor(shape: w.shape, values: dw.map(Float.init)),
                Tensor(shape: [k], values: db.map(Float.init)))
    }

    /// max |a-b| / max |b|: the error relative to the tensor's scale, so that entries that
    /// cancel to nearly zero do not dominate (float32 sums differ in their last bits).
    public static func maxRelativeError(_ a: Tensor, _ b: Tensor) -> Float {
        precondition(a.count == b.count, "compare: \(a.shape) vs \(b.shape)")
        var d: Float = 0, s: Float = 0
        for i in 0..<a.count { d = max(d, abs(a[i] - b[i])); s = max(s, abs(b[i])) }
        return d / max(s, 1e-30)
    }

    /// A tensor with entries uniform in [-scale, scale).
    public static func random(_ shape: [Int], seed: UInt64, scale: Float = 1) -> Tensor {
        var rng = RNG(seed: seed)
        let t = Tensor(shape: shape)
        for i in 0..<t.count { t[i] = (rng.uniform() * 2 - 1) * scale }
        return t
    }

    /// Central finite difference of `loss()` with respect to `t[i]`, step `h`.
    public static func numericGradient(_ t: Tensor, _ i: Int, h: Float = 1e-2, loss: () -> Double) -> Double {
        let old = t[i]
        t[i] = old + h
        let lp = loss()
        t[i] = old - h
        let lm = loss()
        t[i] = old
        return (lp - lm) / (2 * Double(h))
    }

    /// Σ y·r in Double: the scalar whose gradient a layer's backward computes for upstream r.
    public static func dot(_ y: Tensor, _ r: Tensor) -> Double {
        var s = 0.0
        for i in 0..<y.count { s += Double(y[i]) * Double(r[i]) }
        return s
    }
}
