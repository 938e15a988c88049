// The forward pass, and the gather over shifted copies that the input gradient shares.

import ClickTrainCore

extension PatternConvKernel {
    /// `output = conv(input, weights) + bias`, plus `residual` when given (a ResNet block's
    /// shortcut, same shape as the output), then max(0, ·) when `relu` — both fused into
    /// the store; input [N, C, H, W], output [N, K, OH, OW]. `streamOutput` false keeps a
    /// large output in cache (`PatternStrategy.streamingMinBytes`): for a caller that reads it
    /// at once.
    package func forward(input: Tensor, weights pw: PatternWeights, bias: Tensor?, output: Tensor, relu: Bool = false,
                        residual: Tensor? = nil, streamOutput: Bool = true) {
        let g = geometry
        precondition(input.shape == g.inputShape && output.shape == g.outputShape, "pattern conv forward: shapes")
        precondition(residual == nil || residual!.shape == g.outputShape, "pattern conv forward: residual shape")
        precondition(pw.outChannels == g.outChannels && pw.inChannels == g.inChannels, "pattern conv: weight shape")
        let p = planFor(pw)
        let n = g.batch, c = g.inChannels, k = g.outChannels, h = g.height, w = g.width
        let sh = shifted, outSize = sh.positions
        let xin = input.data, yout = output.data, res = residual?.data, bufs = shiftedChunkBuffers()
        let scr = scratch.map(\.data)
        let chunkCount = chunks, used = p.usedCopies
        let biasValues = (0..<k).map { bias?[$0] ?? 0 }
        let grouped = strategy.groupedForward && p.cpStart.count > 1, groups = p.cpStart.count - 1
        let streamY = streamOutput && !grouped && outSize % 16 == 0 && streams(g.outputShape.reduce(1, *))
        p.cpOffset.withUnsafeBufferPointer { cpo in
        p.cpStart.withUnsafeBufferPointer { cps in
        p.cpFilter.withUnsafeBufferPointer { cpf in
        p.cpSlot.withUnsafeBufferPointer { cpk in
        p.fTaps.withUnsafeBufferPointer { ft in
        p.sOffset.withUnsafeBufferPointer { off in
        pw.value.withUnsafeBufferPointer { vs in
        biasValues.withUnsafeBufferPointer { bv in
            let rows = GatherRows(taps: ft.baseAddress!, offset: off.baseAddress ?? ft.baseAddress!,
                                  weight: vs.baseAddress ?? bv.baseAddress!, initial: bv.baseAddress!)
            Threads.parallelFor(chunkCount) { chunk in
                for b in (n * chunk / chunkCount)..<(n * (chunk + 1) / chunkCount) {
                    sh.fill(xin + b * c * h * w, into: bufs[chunk], channels: c, height: h, width: w, used: used)
                    let at = b * k * outSize, y = yout + at
                    guard grouped else {
                        gatherImage(sh, UnsafePointer(bufs[chunk]), rows, count: k, into: y, scratch: scr[chunk],
                                    relu: relu, residual: res.map { UnsafePointer($0 + at) }, stream: streamY)
                        continue
                    }
                    // (Channel, pattern) groups: outputs from the bias, updated in place, then
                    // the residual and ReLU.
                    for f in 0..<k { (y + f * outSize).update(repeating: bv[f], count: outSize) }
                    forwardGrouped(y, UnsafePointer(bufs[chunk]), cpo.baseAddress!, cps.baseAddress!, cpf.baseAddress!,
                                   cpk.baseAddress!, vs.baseAddress!, groups: groups)
                    if let res {
                        addResidual(UnsafePointer(y), UnsafePointer(res + at), into: y, k * outSize, relu: relu)
                    } else if relu {
                        reluInto(UnsafePointer(y), y, k * outSize)
                    }
                }
                if streamY { streamFence() }
            }
        } } } } } } } }
    }
}

/// The rows (output planes) of one gather over shifted copies (the forward, and the input
/// gradient's gathers over the output gradient's copies): row r's taps are
/// taps[r]..<taps[r + 1], tap i reading at offset[i] with weight[i], starting from
/// initial[r].
struct GatherRows {
    let taps: UnsafePointer<Int32>, offset: UnsafePointer<Int32>, weight: UnsafePointer<Float>
    let initial: UnsafePointer<Float>

    /// The rows from row r on (per-row pointers advanced).
    func from(row r: Int) -> GatherRows {
        GatherRows(taps: taps + r, offset: offset, weight: weight, initial: initial + r)
    }
}

/// One image: out[r][0..<positions] for the `count` rows of `rows`, over the shifted copies
/// at `xp`, tile by tile (tiles outermost, so a tile's inputs stay in L1 across rows); then
/// + residual and max(0, ·) as asked. Full tiles are stored in place; a tile passing the
/// plane's end goes through `scratch`. `stream`: full tiles stored non-temporally (positions
/// a multiple of 16, `out` 64-byte aligned; the caller fences).
@inline(__always)
func gatherImage(_ sh: PatternConvKernel.Shifted, _ xp: UnsafePointer<Float>, _ rows: GatherRows, count: Int,
                 into out: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>, relu: Bool,
                 residual: UnsafePointer<Float>?, stream: Bool = false) {
    let size = sh.positions
    sh.tileStart.withUnsafeBufferPointer { tstart in
    sh.tileWidth.withUnsafeBufferPointer { twidth in
        for ti in 0..<tstart.count {
            let q = tstart[ti], width = twidth[ti]
            let valid = min(width, size - q), direct = valid == width
            for r in 0..<count {
                let y = out + r * size + q
                if direct {
                    // Residual and ReLU applied in registers, before the tile's one store.
                    gatherTile(width, y, rows.initial[r], xp + q, Int(rows.taps[r]), Int(rows.taps[r + 1]), rows.offset,
                               rows.weight, relu: relu, residual: residual.map { $0 + r * size + q }, stream: stream)
                    continue
                }
                // The plane's last partial tile: computed in `scratch`, its valid part copied out.
                gatherTile(width, scratch, rows.initial[r], xp + q, Int(rows.taps[r]), Int(rows.taps[r + 1]), rows.offset,
                           rows.weight)
                if let residual {
                    addResidual(scratch, residual + r * size + q, into: y, valid, relu: relu)
                } else if relu {
                    reluInto(scratch, y, valid)
                } else {
                    copyFloats(scratch, y, valid)
                }
            }
        }
    } }
}

/// Forward of one image with 64-position planes, kernels grouped by (input channel,
/// pattern): per group its four taps' inputs in sixteen registers, then per kernel its
/// filter's output plane (4 registers, initialised with the bias) += the four weights times
/// them.
@inline(__always)
func forwardGrouped(_ out: UnsafeMutablePointer<Float>, _ xp: UnsafePointer<Float>, _ offsets: UnsafePointer<Int32>,
                    _ start: UnsafePointer<Int32>, _ filter: UnsafePointer<Int32>, _ slot: UnsafePointer<Int32>,
                    _ weight: UnsafePointer<Float>, groups: Int) {
    typealias V = SIMD16<Float>
    let x = UnsafeRawPointer(xp), dst = UnsafeMutableRawPointer(out)
    for gi in 0..<groups {
        let (a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3) = groupTaps(x, offsets + 4 * gi)
        for j in Int(start[gi])..<Int(start[gi + 1]) {
            let at = 256 * Int(filter[j]), w = weight + Int(slot[j])
            let wa = V(repeating: w[0]), wb = V(repeating: w[1]), wc = V(repeating: w[2]), wd = V(repeating: w[3])
            var y0 = dst.loadUnaligned(fromByteOffset: at, as: V.self), y1 = dst.loadUnaligned(fromByteOffset: at + 64, as: V.self)
            var y2 = dst.loadUnaligned(fromByteOffset: at + 128, as: V.self)
            var y3 = dst.loadUnaligned(fromByteOffset: at + 192, as: V.self)
            y0.addProduct(wa, a0); y1.addProduct(wa, a1); y2.addProduct(wa, a2); y3.addProduct(wa, a3)
            y0.addProduct(wb, b0); y1.addProduct(wb, b1); y2.addProduct(wb, b2); y3.addProduct(wb, b3)
            y0.addProduct(wc, c0); y1.addProduct(wc, c1); y2.addProduct(wc, c2); y3.addProduct(wc, c3)
            y0.addProduct(wd, d0); y1.addProduct(wd, d1); y2.addProduct(wd, d2); y3.addProduct(wd, d3)
            dst.storeBytes(of: y0, toByteOffset: at, as: V.self)
            dst.storeBytes(of: y1, toByteOffset: at + 64, as: V.self)
            dst.storeBytes(of: y2, toByteOffset: at + 128, as: V.self)
            dst.storeBytes(of: y3, toByteOffset: at + 192, as: V.self)
        }
    }
}

/// `gatherTile16/8/4/2/1` by tile width in floats.
@inline(__always)
func gatherTile(_ width: Int, _ dst: UnsafeMutablePointer<Float>, _ initial: Float, _ base: UnsafePointer<Float>,
                _ i0: Int, _ i1: Int, _ off: UnsafePointer<Int32>, _ w: UnsafePointer<Float>, relu: Bool = false,
                residual: UnsafePointer<Float>? = nil, stream: Bool = false) {
    switch width {
    case 128: gatherTile16(dst, initial, base, i0, i1, off, w, relu, residual, stream)
    case 64: gatherTile8(dst, initial, base, i0, i1, off, w, relu, residual, stream)
    case 32: gatherTile4(dst, initial, base, i0, i1, off, w, relu, residual, stream)
    case 16: gatherTile2(dst, initial, base, i0, i1, off, w, relu, residual, stream)
    default: gatherTile1(dst, initial, base, i0, i1, off, w, relu, residual, false)
    }
}
