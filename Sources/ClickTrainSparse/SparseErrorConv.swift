import ClickTrainCore

/// Backward convolutions that skip the zeros of the output gradient, with the
/// activation-gradient pruning fused in.
///
/// Each image is processed on its own (threads split the batch):
/// 1. its input goes channels-last into a zero-bordered scratch (8x8 blocks transposed in
///    registers; the padding is real zeros, so no tap needs a bounds test);
/// 2. each (n, k) gradient plane is pruned on the spot (the stochastic rule of
///    `GradientPruner`, same random stream) and compacted into a per-filter list of
///    (position, value) without data-dependent branches: the non-zero mask of eight
///    entries picks their lane numbers from a 256-entry table;
/// 3. filter by filter, eight input channels at a time: for the weight gradient the nine
///    taps are nine SIMD8 accumulators in registers, each non-zero adds `v · x[patch]`,
///    stored once per filter, not once per non-zero; for the input gradient the filter's
///    nine weight taps stay in registers while each non-zero adds `v · W[k, tap]` to the
///    channels-last input gradient, which then goes back to [C, H, W].
/// Filter-by-filter lists keep every branch independent of the data: sorting the non-zeros
/// by position (one read-modify-write per tap for all filters) or gathering per input
/// position (no stores) would cost a mispredicted branch per position or per tap.
/// With `tau` 0 nothing is pruned and the kernel just skips the map's exact zeros.
package final class SparseErrorConvKernel {
    package let geometry: ConvGeometry
    private let chunks: Int
    /// Padded channels-last image geometry.
    private let padH: Int, padW: Int
    /// Per output position: offset of its patch's top-left tap in the padded image.
    private let patchBase: [Int32]
    /// Per tap: offset from the patch's top-left tap.
    private let tapOffset: [Int]
    private let scratch: [Scratch]
    private let wT: Tensor
    private let prunedOut: Tensor?
    /// For each 8-bit mask, the numbers of its set bits in order, 3 bits each.
    private let lut: UnsafeMutablePointer<UInt32>

    /// Per-thread buffers, allocated once.
    private final class Scratch {
        let x: Tensor, dx: Tensor, dw: Tensor, plane: Tensor
        var nzPos: [Int32], nzVal: [Float], filterStart: [Int]
        init(_ g: ConvGeometry, padH: Int, padW: Int) {
            let plane = g.outHeight * g.outWidth, cap = plane * g.outChannels
            x = Tensor(shape: [padH * padW * g.inChannels])
            dx = Tensor(shape: [padH * padW * g.inChannels])
            dw = Tensor(shape: [g.outChannels * g.kernelSize * g.kernelSize * g.inChannels])
            self.plane = Tensor(shape: [plane])
            nzPos = [Int32](repeating: 0, count: cap + 8)
            nzVal = [Float](repeating: 0, count: cap)
            filterStart = [Int](repeating: 0, count: g.outChannels + 1)
        }
    }

    /// Input channel counts must be multiples of 8 (the SIMD width); `supports` tells.
    package static func supports(_ g: ConvGeometry) -> Bool { g.inChannels % 8 == 0 }

    /// - Parameter keepPrunedGradient: also write the pruned gradient map (for tests).
    package init(_ g: ConvGeometry, keepPrunedGradient: Bool = false) {
        precondition(SparseErrorConvKernel.supports(g), "sparse error-map kernels need input channels divisible by 8: \(g)")
        geometry = g
        chunks = max(1, min(Threads.count, g.batch))
        padH = g.height + 2 * g.padding
        padW = g.width + 2 * g.padding
        let c = g.inChannels, pw = padW
        patchBase = (0..<(g.outHeight * g.outWidth)).map { p in
            Int32(((p / g.outWidth) * g.stride * pw + (p % g.outWidth) * g.stride) * c)
        }
        tapOffset = (0..<(g.kernelSize * g.kernelSize)).map { t in
            ((t / g.kernelSize) * pw + t % g.kernelSize) * c
        }
        let (ph, pwid) = (padH, padW)
        scratch = (0..<chunks).map { _ in Scratch(g, padH: ph, padW: pwid) }
        wT = Tensor(shape: [g.outChannels, g.kernelSize, g.kernelSize, g.inChannels])
        prunedOut = keepPrunedGradient ? Tensor(shape: g.outputShape) : nil
        lut = .allocate(capacity: 256)
        for m in 0..<256 {
            var packed: UInt32 = 0, n: UInt32 = 0
            for l in 0..<8 where m & (1 << l) != 0 { packed |= UInt32(l) << (3 * n); n += 1 }
            lut[m] = packed
        }
    }

    deinit { lut.deallocate() }

    /// The pruned gradient of the last call, when kept.
    package var prunedGradient: Tensor? { prunedOut }

    /// Input and weight gradients from `gradOutput` pruned with threshold `tau` (0: no
    /// pruning) and random stream `key` (see `GradientPruner.streamKey`). `gradInput` nil
    /// skips the input gradient. Gradients are overwritten. Returns the number of zeros
    /// of the pruned gradient.
    @discardableResult
    package func backward(input: Tensor, weight: Tensor, gradOutput: Tensor, tau: Float = 0, key: UInt32 = 0,
                         gradInput: Tensor?, gradWeight: Tensor, gradBias: Tensor?) -> Int {
        let g = geometry
        precondition(gradOutput.shape == g.outputShape && input.shape == g.inputShape, "sparse conv backward: shapes")
        let n = g.batch, c = g.inChannels, k = g.outChannels, taps = g.kernelSize * g.kernelSize
        let wantDx = gradInput != nil
        if wantDx { transposeToChannelsLast(weight.data, wT.data, c: c, hw: taps, count: k) }
        var zerosPerChunk = [Int](repeating: 0, count: chunks)
        var biasPerChunk = [Float](repeating: 0, count: chunks * k)
        let chunkCount = chunks
        zerosPerChunk.withUnsafeMutableBufferPointer { zp in
            biasPerChunk.withUnsafeMutableBufferPointer { bp in
                let zerosOut = zp.baseAddress!, biasOut = bp.baseAddress!
                Threads.parallelFor(chunkCount) { chunk in
                    let s = scratch[chunk]
                    s.dw.zero()
                    var zeros = 0
                    for b in (n * chunk / chunkCount)..<(n * (chunk + 1) / chunkCount) {
                        zeros += image(b, s, input: input, gradOutput: gradOutput, tau: tau, key: key,
                                       gradInput: gradInput, bias: biasOut + chunk * k)
                    }
                    zerosOut[chunk] = zeros
                }
            }
        }
        // Sum the per-thread weight gradients in a fixed order, then back to [K, C, k, k].
        let acc = scratch[0].dw.data, total = k * taps * c
        for t in 1..<chunks { let o = scratch[t].dw.data; for i in 0..<total { acc[i] += o[i] } }
        let gw = gradWeight.data
        for f in 0..<k { for ch in 0..<c { for t in 0..<taps {
            gw[(f * c + ch) * taps + t] = acc[(f * taps + t) * c + ch]
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

    /// One image on one thread; adds its weight gradient to the scratch's and its bias
    /// gradient to `bias`; returns the zeros of its pruned gradient.
    private func image(_ b: Int, _ s: Scratch, input: Tensor, gradOutput: Tensor, tau: Float, key: UInt32,
                       gradInput: Tensor?, bias: UnsafeMutablePointer<Float>) -> Int {
        let g = geometry
        let c = g.inChannels, k = g.outChannels, h = g.height, w = g.width, pad = g.padding
        let hw = h * w, plane = g.outHeight * g.outWidth, taps = g.kernelSize * g.kernelSize
        let xp = s.x.data, pw = padW
        // 1. Channels-last input inside the zero border.
        let src = input.data + b * c * hw
        for y in 0..<h {
            transposeRow(planar: src + y * w, planeStride: hw, channelsLast: xp + ((y + pad) * pw + pad) * c,
                         c: c, w: w, toChannelsLast: true)
        }
        // 2. Prune and compact each filter's plane.
        let pr = GradientPruner(rate: 0)
        let pb = s.plane.data
        var count = 0, zeros = 0
        s.nzPos.withUnsafeMutableBufferPointer { posBuf in
            s.nzVal.withUnsafeMutableBufferPointer { valBuf in
                let nzPos = posBuf.baseAddress!, nzVal = valBuf.baseAddress!
                for f in 0..<k {
                    s.filterStart[f] = count
                    let base = (b * k + f) * plane
                    let gp: UnsafePointer<Float>
                    if tau > 0 {
                        _ = pr.applyRange(gradOutput.data + base, into: pb, count: plane, tau: tau, key: key, indexBase: base)
                        gp = UnsafePointer(pb)
                    } else {
                        gp = UnsafePointer(gradOutput.data + base)
                    }
                    if let kept = prunedOut { (kept.data + base).update(from: gp, count: plane) }
                    let before = count
                    var sumV = SIMD8<Float>()
                    let lanes = SIMD8<Int32>(1, 2, 4, 8, 16, 32, 64, 128)
                    let shifts = SIMD8<UInt32>(0, 3, 6, 9, 12, 15, 18, 21)
                    var i = 0
                    while i + 8 <= plane {
                        // Branch-free compaction: the non-zero lanes' bit mask picks their lane
                        // numbers (3 bits each) from a table; all eight are stored, the count
                        // moves on by the number of non-zeros (a data-dependent branch per
                        // group mispredicted about once per group).
                        let v = UnsafeRawPointer(gp + i).loadUnaligned(as: SIMD8<Float>.self)
                        sumV += v
                        let bits = Int((unsafeBitCast(v .!= 0, to: SIMD8<Int32>.self) & lanes).wrappedSum())
                        let idx = (SIMD8<UInt32>(repeating: lut[bits]) &>> shifts) & 7
                        UnsafeMutableRawPointer(nzPos + count).storeBytes(
                            of: SIMD8<Int32>(truncatingIfNeeded: idx) &+ Int32(i), as: SIMD8<Int32>.self)
                        count += bits.nonzeroBitCount
                        i += 8
                    }
                    var sum = sumV.sum()
                    while i < plane {
                        if gp[i] != 0 { nzPos[count] = Int32(i); sum += gp[i]; count += 1 }
                        i += 1
                    }
                    for j in before..<count { nzVal[j] = gp[Int(nzPos[j])] }
                    bias[f] += sum
                    zeros += plane - (count - before)
                }
                s.filterStart[k] = count
            }
        }
        if count == 0 {
            if let gi = gradInput { (gi.data + b * c * hw).update(repeating: 0, count: c * hw) }
            return zeros
        }
        // 3. Filter by filter, eight input channels at a time: the weight gradient with its
        // nine taps in accumulators, the input gradient with the filter's nine taps in
        // registers (both over the filter's non-zeros).
        let dxp = gradInput == nil ? nil : s.dx.data
        dxp?.update(repeating: 0, count: padH * pw * c)
        patchBase.withUnsafeBufferPointer { pbBuf in
            tapOffset.withUnsafeBufferPointer { toBuf in
                s.nzPos.withUnsafeBufferPointer { posBuf in
                    s.nzVal.withUnsafeBufferPointer { valBuf in
                        let base = pbBuf.baseAddress!, off = toBuf.baseAddress!
                        let nzPos = posBuf.baseAddress!, nzVal = valBuf.baseAddress!
                        let dw = s.dw.data, wt = wT.data
                        for f in 0..<k {
                            let lo = s.filterStart[f], hi = s.filterStart[f + 1]
                            if lo == hi { continue }
                            let dwf = dw + f * taps * c, wf = wt + f * taps * c
                            var cc = 0
                            while cc < c {
                                if taps == 9 {
                                    gatherNine(xp + cc, base: base, pos: nzPos, val: nzVal, lo: lo, hi: hi, off: off,
                                               into: dwf + cc, stride: c)
                                    if let dxp {
                                        scatterNine(wf + cc, tapStride: c, base: base, pos: nzPos, val: nzVal, lo: lo,
                                                    hi: hi, off: off, into: dxp + cc)
                                    }
                                } else {
                                    for t in 0..<taps {
                                        gatherOne(xp + cc + off[t], base: base, pos: nzPos, val: nzVal, lo: lo, hi: hi,
                                                  into: dwf + t * c + cc)
                                        if let dxp {
                                            scatterOne(load8(wf + t * c + cc), base: base, pos: nzPos, val: nzVal, lo: lo,
                                                       hi: hi, into: dxp + off[t] + cc)
                                        }
                                    }
                                }
                                cc += 8
                            }
                        }
                    }
                }
            }
        }
        guard let gi = gradInput, let dxp else { return zeros }
        // Back to [C, H, W] without the border.
        let dst = gi.data + b * c * hw
        for y in 0..<h {
            transposeRow(planar: dst + y * w, planeStride: hw, channelsLast: dxp + ((y + pad) * pw + pad) * c,
                         c: c, w: w, toChannelsLast: false)
        }
        return zeros
    }
}

/// One image row between planar `[c][.. w ..]` (planes `planeStride` apart) and
/// channels-last `[w][c]`, in 8x8 blocks transposed in registers (a scalar copy with the
/// planes 4 KiB apart stalls on 4K aliasing and cost more than the sparse arithmetic).
/// `c` is a multiple of 8.
@inline(__always)
private func transposeRow(planar: UnsafeMutablePointer<Float>, planeStride: Int,
                          channelsLast: UnsafeMutablePointer<Float>, c: Int, w: Int, toChannelsLast: Bool) {
    var x = 0
    while x + 8 <= w {
        var ch = 0
        while ch < c {
            let p = planar + ch * planeStride + x, q = channelsLast + x * c + ch
            if toChannelsLast {
                let t = transpose8x8(load8(p), load8(p + planeStride), load8(p + 2 * planeStride),
                                     load8(p + 3 * planeStride), load8(p + 4 * planeStride), load8(p + 5 * planeStride),
                                     load8(p + 6 * planeStride), load8(p + 7 * planeStride))
                store8(q, t.0); store8(q + c, t.1); store8(q + 2 * c, t.2); store8(q + 3 * c, t.3)
                store8(q + 4 * c, t.4); store8(q + 5 * c, t.5); store8(q + 6 * c, t.6); store8(q + 7 * c, t.7)
            } else {
                let t = transpose8x8(load8(q), load8(q + c), load8(q + 2 * c), load8(q + 3 * c), load8(q + 4 * c),
                                     load8(q + 5 * c), load8(q + 6 * c), load8(q + 7 * c))
                store8(p, t.0); store8(p + planeStride, t.1); store8(p + 2 * planeStride, t.2)
                store8(p + 3 * planeStride, t.3); store8(p + 4 * planeStride, t.4); store8(p + 5 * planeStride, t.5)
                store8(p + 6 * planeStride, t.6); store8(p + 7 * planeStride, t.7)
            }
            ch += 8
        }
        x += 8
    }
    while x < w {
        for ch in 0..<c {
            if toChannelsLast {
                channelsLast[x * c + ch] = planar[ch * planeStride + x]
            } else {
                planar[ch * planeStride + x] = channelsLast[x * c + ch]
            }
        }
        x += 1
    }
}

typealias Rows8 = (SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>,
                   SIMD8<Float>, SIMD8<Float>, SIMD8<Float>, SIMD8<Float>)

/// Transpose of the 8x8 matrix with rows r0…r7: three rounds of "even lanes of each pair,
/// then odd lanes", each of which rotates the 6-bit element index right by one bit.
@inline(__always)
func transpose8x8(_ r0: SIMD8<Float>, _ r1: SIMD8<Float>, _ r2: SIMD8<Float>, _ r3: SIMD8<Float>,
                  _ r4: SIMD8<Float>, _ r5: SIMD8<Float>, _ r6: SIMD8<Float>, _ r7: SIMD8<Float>) -> Rows8 {
    @inline(__always) func round(_ v: Rows8) -> Rows8 {
        let p0 = SIMD16(lowHalf: v.0, highHalf: v.1), p1 = SIMD16(lowHalf: v.2, highHalf: v.3)
        let p2 = SIMD16(lowHalf: v.4, highHalf: v.5), p3 = SIMD16(lowHalf: v.6, highHalf: v.7)
        return (p0.evenHalf, p1.evenHalf, p2.evenHalf, p3.evenHalf, p0.oddHalf, p1.oddHalf, p2.oddHalf, p3.oddHalf)
    }
    return round(round(round((r0, r1, r2, r3, r4, r5, r6, r7))))
}

@inline(__always)
private func store8(_ p: UnsafeMutablePointer<Float>, _ v: SIMD8<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
}

@inline(__always)
private func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
}

/// p[0..<8] += a · b
@inline(__always)
private func fma8(_ p: UnsafeMutablePointer<Float>, _ a: SIMD8<Float>, _ b: SIMD8<Float>) {
    let r = UnsafeMutableRawPointer(p)
    r.storeBytes(of: r.loadUnaligned(as: SIMD8<Float>.self).addingProduct(a, b), as: SIMD8<Float>.self)
}

@inline(__always)
private func add8(_ p: UnsafeMutablePointer<Float>, _ v: SIMD8<Float>) {
    let r = UnsafeMutableRawPointer(p)
    r.storeBytes(of: r.loadUnaligned(as: SIMD8<Float>.self) + v, as: SIMD8<Float>.self)
}

/// dw[t] += Σ_j val[j] · x[base[pos[j]] + off[t]] for the nine taps of a 3x3 kernel, eight
/// channels; `into` holds the taps `stride` floats apart.
@inline(__always)
private func gatherNine(_ x: UnsafePointer<Float>, base: UnsafePointer<Int32>, pos: UnsafePointer<Int32>,
                        val: UnsafePointer<Float>, lo: Int, hi: Int, off: UnsafePointer<Int>,
                        into dw: UnsafeMutablePointer<Float>, stride: Int) {
    let o0 = off[0], o1 = off[1], o2 = off[2], o3 = off[3], o4 = off[4], o5 = off[5], o6 = off[6], o7 = off[7],
        o8 = off[8]
    var a0 = SIMD8<Float>(), a1 = SIMD8<Float>(), a2 = SIMD8<Float>(), a3 = SIMD8<Float>(), a4 = SIMD8<Float>()
    var a5 = SIMD8<Float>(), a6 = SIMD8<Float>(), a7 = SIMD8<Float>(), a8 = SIMD8<Float>()
    for j in lo..<hi {
        let v = SIMD8<Float>(repeating: val[j])
        let p = x + Int(base[Int(pos[j])])
        a0.addProduct(v, load8(p + o0)); a1.addProduct(v, load8(p + o1)); a2.addProduct(v, load8(p + o2))
        a3.addProduct(v, load8(p + o3)); a4.addProduct(v, load8(p + o4)); a5.addProduct(v, load8(p + o5))
        a6.addProduct(v, load8(p + o6)); a7.addProduct(v, load8(p + o7)); a8.addProduct(v, load8(p + o8))
    }
    add8(dw, a0); add8(dw + stride, a1); add8(dw + 2 * stride, a2); add8(dw + 3 * stride, a3)
    add8(dw + 4 * stride, a4); add8(dw + 5 * stride, a5); add8(dw + 6 * stride, a6); add8(dw + 7 * stride, a7)
    add8(dw + 8 * stride, a8)
}

/// One tap of `gatherNine`.
@inline(__always)
private func gatherOne(_ x: UnsafePointer<Float>, base: UnsafePointer<Int32>, pos: UnsafePointer<Int32>,
                       val: UnsafePointer<Float>, lo: Int, hi: Int, into dw: UnsafeMutablePointer<Float>) {
    var a = SIMD8<Float>()
    for j in lo..<hi { a.addProduct(SIMD8(repeating: val[j]), load8(x + Int(base[Int(pos[j])]))) }
    add8(dw, a)
}

/// dx[base[pos[j]] + off[t]] += val[j] · W[t] for the nine taps of one filter, eight
/// channels; the filter's taps stay in registers while its non-zeros scatter.
@inline(__always)
private func scatterNine(_ w: UnsafePointer<Float>, tapStride ts: Int, base: UnsafePointer<Int32>,
                         pos: UnsafePointer<Int32>, val: UnsafePointer<Float>, lo: Int, hi: Int,
                         off: UnsafePointer<Int>, into dx: UnsafeMutablePointer<Float>) {
    let w0 = load8(w), w1 = load8(w + ts), w2 = load8(w + 2 * ts), w3 = load8(w + 3 * ts), w4 = load8(w + 4 * ts)
    let w5 = load8(w + 5 * ts), w6 = load8(w + 6 * ts), w7 = load8(w + 7 * ts), w8 = load8(w + 8 * ts)
    let o0 = off[0], o1 = off[1], o2 = off[2], o3 = off[3], o4 = off[4], o5 = off[5], o6 = off[6], o7 = off[7],
        o8 = off[8]
    for j in lo..<hi {
        let v = SIMD8<Float>(repeating: val[j])
        let d = dx + Int(base[Int(pos[j])])
        fma8(d + o0, v, w0); fma8(d + o1, v, w1); fma8(d + o2, v, w2); fma8(d + o3, v, w3)
        fma8(d + o4, v, w4); fma8(d + o5, v, w5); fma8(d + o6, v, w6); fma8(d + o7, v, w7)
        fma8(d + o8, v, w8)
    }
}

/// One tap of `scatterNine`.
@inline(__always)
private func scatterOne(_ w: SIMD8<Float>, base: UnsafePointer<Int32>, pos: UnsafePointer<Int32>,
                        val: UnsafePointer<Float>, lo: Int, hi: Int, into dx: UnsafeMutablePointer<Float>) {
    for j in lo..<hi { fma8(dx + Int(base[Int(pos[j])]), SIMD8(repeating: val[j]), w) }
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
