import ClickTrainCore

/// Backward convolutions that skip the zeros of the output gradient, with the
/// activation-gradient pruning fused in (SPEC §4).
///
/// Representation, chosen by measurement: none. Each image is processed on its own
/// (threads split the batch); its input goes channels-last into a cache-resident
/// scratch, every (n, k) gradient plane is read once, each entry is pruned on the spot
/// (the stochastic rule of `GradientPruner`, same random stream), and each surviving
/// value `v` at (oy, ox) scatters `v · W[k, :, tap]` into the image's channels-last input
/// gradient and `v · x[n, :, tap]` into the thread's weight gradient — SIMD over input
/// channels. Index lists or bitmaps cost two extra passes over the map for nothing. With
/// `tau` 0 nothing is pruned and the kernel just skips the map's exact zeros.
public final class SparseErrorConvKernel {
    public let geometry: ConvGeometry
    private let chunks: Int
    private let xT: [Tensor], dxT: [Tensor], dwT: [Tensor]
    private let wT: Tensor
    private let prunedOut: Tensor?
    private let planeScratch: [Tensor]

    /// Channel counts must be multiples of 8 (the SIMD width); `supports` tells.
    public static func supports(_ g: ConvGeometry) -> Bool { g.inChannels % 8 == 0 }

    /// - Parameter keepPrunedGradient: also write the pruned gradient map (for tests).
    public init(_ g: ConvGeometry, keepPrunedGradient: Bool = false) {
        precondition(SparseErrorConvKernel.supports(g), "sparse error-map kernels need input channels divisible by 8: \(g)")
        geometry = g
        chunks = max(1, min(Threads.count, g.batch))
        let img = [g.height, g.width, g.inChannels]
        xT = (0..<chunks).map { _ in Tensor(shape: img) }
        dxT = (0..<chunks).map { _ in Tensor(shape: img) }
        dwT = (0..<chunks).map { _ in Tensor(shape: [g.outChannels, g.kernelSize, g.kernelSize, g.inChannels]) }
        wT = Tensor(shape: [g.outChannels, g.kernelSize, g.kernelSize, g.inChannels])
        prunedOut = keepPrunedGradient ? Tensor(shape: g.outputShape) : nil
        planeScratch = (0..<chunks).map { _ in Tensor(shape: [g.outHeight * g.outWidth]) }
    }

    /// The pruned gradient of the last call, when kept.
    public var prunedGradient: Tensor? { prunedOut }

    /// Input and weight gradients from `gradOutput` pruned with threshold `tau` (0: no
    /// pruning) and random stream `key` (see `GradientPruner.streamKey`). `gradInput` nil
    /// skips the input gradient. Gradients are overwritten. Returns the number of zeros
    /// of the pruned gradient.
    @discardableResult
    public func backward(input: Tensor, weight: Tensor, gradOutput: Tensor, tau: Float = 0, key: UInt32 = 0,
                         gradInput: Tensor?, gradWeight: Tensor, gradBias: Tensor?) -> Int {
        let g = geometry
        precondition(gradOutput.shape == g.outputShape && input.shape == g.inputShape, "sparse conv backward: shapes")
        let n = g.batch, c = g.inChannels, k = g.outChannels, ks = g.kernelSize, h = g.height, w = g.width
        let oh = g.outHeight, ow = g.outWidth, s = g.stride, pad = g.padding
        let plane = oh * ow, hw = h * w
        let wantDx = gradInput != nil
        if wantDx { transposeToChannelsLast(weight.data, wT.data, c: c, hw: ks * ks, count: k) }
        var zerosPerChunk = [Int](repeating: 0, count: chunks)
        var biasPerChunk = [Float](repeating: 0, count: chunks * k)
        let xs = xT.map(\.data), dxs = dxT.map(\.data), dws = dwT.map(\.data)
        let src = gradOutput.data, xin = input.data, wt = wT.data, dxOut = gradInput?.data
        let kept = prunedOut?.data
        let chunkCount = chunks
        let pr = GradientPruner(rate: 0)
        let planeBuf = planeScratch.map(\.data)
        zerosPerChunk.withUnsafeMutableBufferPointer { zp in
            biasPerChunk.withUnsafeMutableBufferPointer { bp in
                let zerosOut = zp.baseAddress!, biasOut = bp.baseAddress!
                // One image: channels-last input, then each gradient plane pruned (SIMD) into
                // a small buffer and its non-zeros scattered.
                func image<V: SIMD>(_: V.Type, b: Int, chunk: Int) -> Int where V.Scalar == Float {
                    let cc = V.scalarCount * (c / V.scalarCount)
                    let xh = xs[chunk], dxh = dxs[chunk], dwh = dws[chunk], pb = planeBuf[chunk]
                    transposeToChannelsLast(xin + b * cc * hw, xh, c: cc, hw: hw, count: 1)
                    if wantDx { dxh.update(repeating: 0, count: hw * cc) }
                    var zeros = 0
                    for f in 0..<k {
                        let base = (b * k + f) * plane
                        let gp: UnsafePointer<Float>
                        if tau > 0 {
                            zeros += pr.applyRange(src + base, into: pb, count: plane, tau: tau, key: key, indexBase: base)
                            gp = UnsafePointer(pb)
                        } else {
                            gp = UnsafePointer(src + base)
                            for i in 0..<plane where gp[i] == 0 { zeros += 1 }
                        }
                        if let kept { (kept + base).update(from: gp, count: plane) }
                        let wf = wt + f * ks * ks * cc, dwf = dwh + f * ks * ks * cc
                        var bsum: Float = 0
                        for oy in 0..<oh {
                            let iy0 = oy * s - pad
                            let kyLo = max(0, -iy0), kyHi = min(ks, h - iy0)
                            let grow = gp + oy * ow
                            for ox in 0..<ow {
                                let v = grow[ox]
                                if v == 0 { continue }
                                bsum += v
                                let ix0 = ox * s - pad
                                let kxLo = max(0, -ix0), kxHi = min(ks, w - ix0)
                                var ky = kyLo
                                while ky < kyHi {
                                    let row = ((iy0 + ky) * w + ix0) * cc, tap = ky * ks * cc
                                    var kx = kxLo
                                    while kx < kxHi {
                                        axpyV(V.self, v, xh + row + kx * cc, dwf + tap + kx * cc, cc)
                                        if wantDx { axpyV(V.self, v, wf + tap + kx * cc, dxh + row + kx * cc, cc) }
                                        kx += 1
                                    }
                                    ky += 1
                                }
                            }
                        }
                        biasOut[chunk * k + f] += bsum
                    }
                    if let dxo = dxOut { transposeFromChannelsLast(dxh, dxo + b * cc * hw, c: cc, hw: hw) }
                    return zeros
                }
                Threads.parallelFor(chunkCount) { chunk in
                    dws[chunk].update(repeating: 0, count: k * ks * ks * c)
                    var zeros = 0
                    for b in (n * chunk / chunkCount)..<(n * (chunk + 1) / chunkCount) {
                        // SIMD16 (two AVX2 registers) is the widest vector Swift lowers well;
                        // SIMD32/64 measured 30-100x slower.
                        if c % 16 == 0 {
                            zeros += image(SIMD16<Float>.self, b: b, chunk: chunk)
                        } else {
                            zeros += image(SIMD8<Float>.self, b: b, chunk: chunk)
                        }
                    }
                    zerosOut[chunk] = zeros
                }
            }
        }
        // Sum the per-thread weight gradients in a fixed order, then back to [K, C, k, k].
        let acc = dwT[0].data
        for t in 1..<chunks { let o = dwT[t].data; for i in 0..<dwT[0].count { acc[i] += o[i] } }
        let taps = ks * ks
        for f in 0..<k { for ch in 0..<c { for t in 0..<taps {
            gradWeight.data[(f * c + ch) * taps + t] = acc[(f * taps + t) * c + ch]
        } } }
        if let db = gradBias {
            for f in 0..<k {
                var sum: Float = 0
                for t in 0..<chunks { sum += biasPerChunk[t * k + f] }
                db[f] = sum
            }
        }
        return zerosPerChunk.reduce(0, +)
    }
}

/// y[0..<n] += a · x[0..<n] in vectors of V (n a multiple of V's width; one iteration when
/// V spans all channels, so the loop disappears).
@inline(__always)
func axpyV<V: SIMD>(_: V.Type, _ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int)
    where V.Scalar == Float
{
    let av = V(repeating: a)
    let xr = UnsafeRawPointer(x), yr = UnsafeMutableRawPointer(y)
    var i = 0
    repeat {
        let xv = xr.loadUnaligned(fromByteOffset: i * 4, as: V.self)
        let yv = yr.loadUnaligned(fromByteOffset: i * 4, as: V.self)
        yr.storeBytes(of: yv.addingProduct(av, xv), toByteOffset: i * 4, as: V.self)
        i += V.scalarCount
    } while i < n
}

/// `count` blocks of [c][hw] → [hw][c].
@inline(__always)
func transposeToChannelsLast(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, c: Int, hw: Int,
                             count: Int) {
    for b in 0..<count {
        let s = src + b * c * hw, d = dst + b * c * hw
        for ch in 0..<c { for p in 0..<hw { d[p * c + ch] = s[ch * hw + p] } }
    }
}

/// [hw][c] → [c][hw].
@inline(__always)
func transposeFromChannelsLast(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, c: Int, hw: Int) {
    for p in 0..<hw { for ch in 0..<c { dst[ch * hw + p] = src[p * c + ch] } }
}
