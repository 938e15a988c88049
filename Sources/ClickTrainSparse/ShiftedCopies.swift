// The shifted copies every path reads: an image's channels laid out on the output grid,
// one copy per (column tap, row parity), so that each tap reads one contiguous run.

import ClickTrainCore

extension PatternConvKernel {
    /// The forward pass reads each input channel as 3·stride shifted copies laid out on the
    /// output grid: copy (kx, py) row r holds x[stride·r + py − 1][stride·ox + kx − 1] at
    /// column ox (zero outside the image). Tap (ky, kx) for the output at q = oy·OW + ox
    /// then reads copy (kx, ky mod stride) at q + (ky / stride)·OW: one contiguous run over
    /// the whole output plane, so tiles cover OH·OW positions with no pad columns, write
    /// straight into the output (no scratch, no copy-out segments), and when OW is a
    /// multiple of 16 every load is 64-byte aligned.
    struct Shifted {
        let stride: Int, rows: Int, width: Int, positions: Int
        /// Floats per copy and per input channel (3·stride copies).
        let copyStride: Int, channelStride: Int
        /// Where tap t reads for the output at q = 0, from its channel's first copy.
        let tapOffsets: [Int]
        /// Stride 1: lane masks (all ones: keep, zero: the column is outside the image) for a
        /// run of 16 outputs starting at column m of a row, m in 0..<OW: for copy kx = 0
        /// (column 0 reads x[·][−1]) and copy kx = 2 (column OW − 1 reads x[·][OW]).
        let edgeMask0: [SIMD16<UInt32>], edgeMask2: [SIMD16<UInt32>]
        /// Gather tiles over 0..<positions: start, width (`gatherTileMax`, 64, 32, 16 or 8);
        /// the last may pass the end (`positions` not a multiple of 8) and then goes through
        /// the scratch tile. The weight gradient uses the same tiles.
        let tileStart: [Int], tileWidth: [Int]
        /// Channels whose rows the fill reads side by side (`stride2Fill`, `stride1Fill`): 8 for
        /// planes of 1024 or more floats (each channel a page or more of the input: the fill is
        /// memory-bound, and several pages read side by side keep more lines in flight), else 1
        /// (smaller planes are in cache, where one channel at a time is faster).
        let fillChannelGroup: Int

        init(_ g: ConvGeometry) {
            let s = g.stride, oh = g.outHeight, ow = g.outWidth
            stride = s
            width = ow
            rows = oh + 2 / s
            positions = oh * ow
            // Reads reach (2 / s)·OW + positions rounded up to 8, past the rows by < 8.
            let cs = ((oh + 2 / s) * ow + 8 + 15) / 16 * 16
            copyStride = cs
            channelStride = 3 * s * cs
            tapOffsets = (0..<9).map { t in
                let (ky, kx) = (t / 3, t % 3)
                return (kx * s + ky % s) * cs + (ky / s) * ow
            }
            func masks(zeroAt column: Int) -> [SIMD16<UInt32>] {
                s != 1 ? [] : (0..<ow).map { m in
                    var v = SIMD16<UInt32>(repeating: .max)
                    for l in 0..<16 where (m + l) % ow == column { v[l] = 0 }
                    return v
                }
            }
            edgeMask0 = masks(zeroAt: 0)
            edgeMask2 = masks(zeroAt: ow - 1)
            func tiles(upTo most: Int) -> ([Int], [Int]) {
                var ts: [Int] = [], tw: [Int] = []
                var q = 0
                while q < oh * ow {
                    let w = [most, 64, 32, 16].first { $0 <= oh * ow - q } ?? 8
                    ts.append(q); tw.append(w)
                    q += w
                }
                return (ts, tw)
            }
            (tileStart, tileWidth) = tiles(upTo: gatherTileMax)
            fillChannelGroup = g.height * g.width >= 1024 ? 8 : 1
        }

        /// Copy index (kx·stride + py) of tap t.
        func copy(ofTap t: Int) -> Int { (t % 3) * stride + (t / 3) % stride }

        /// Fills the copies in `used` (bit per copy) for one image [channels, h, w]; entries
        /// outside the image are zero from the buffer's creation and never written.
        func fill(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, channels: Int, height h: Int,
                  width w: Int, used: Int) {
            let s = stride, ow = width
            if s == 1 {
                // Copy kx holds the channel's whole plane shifted by one row and kx − 1 columns:
                // one flat run per copy (rows 0 and OH + 1 stay zero), the columns that fall
                // outside the image masked to zero (a per-row loop cost as much as the tiles).
                let n = h * w, cs = copyStride
                if w % 16 == 0 {
                    stride1Fill(src, into: dst, channels: channels, height: h, width: w, used: used)
                    return
                }
                edgeMask0.withUnsafeBufferPointer { m0 in
                edgeMask2.withUnsafeBufferPointer { m2 in
                    for c in 0..<channels {
                        let sc = src + c * n, dc = dst + c * channelStride + ow
                        if used & 2 != 0 { (dc + cs).update(from: sc, count: n) }
                        if used & 1 != 0 { shiftedPlane(sc, dc, n, w, kx: 0, m0.baseAddress!) }
                        if used & 4 != 0 { shiftedPlane(sc, dc + 2 * cs, n, w, kx: 2, m2.baseAddress!) }
                    }
                } }
                return
            }
            if w % 16 == 0 && h % 2 == 0 {
                stride2Fill(src, into: dst, channels: channels, height: h, width: w, used: used)
                return
            }
            for c in 0..<channels {
                let sc = src + c * h * w, dc = dst + c * channelStride
                for y in 0..<h {
                    // Stride 2. Input row y is row r of the copies with parity py (y = s·r + py − 1).
                    let py = (y + 1) % s, r = (y + 1) / s, sr = sc + y * w
                    let d0 = dc + py * copyStride + r * ow, d1 = d0 + s * copyStride, d2 = d1 + s * copyStride
                    let use0 = used & (1 << py) != 0, use1 = used & (1 << (s + py)) != 0
                    let use2 = used & (1 << (2 * s + py)) != 0
                    // kx = 1 reads the even columns 2·ox, kx = 2 the odd ones 2·ox + 1, kx = 0
                    // the odd ones shifted by one (2·ox − 1).
                    let raw = UnsafeRawPointer(sr)
                    var ox = 0
                    while 2 * ox + 16 <= w {
                        let v = raw.loadUnaligned(fromByteOffset: 8 * ox, as: SIMD16<Float>.self)
                        if use1 { UnsafeMutableRawPointer(d1 + ox).storeBytes(of: v.evenHalf, as: SIMD8<Float>.self) }
                        if use2 { UnsafeMutableRawPointer(d2 + ox).storeBytes(of: v.oddHalf, as: SIMD8<Float>.self) }
                        // Shifted by one: may spill into column 0 of the next row, restored below.
                        if use0 { UnsafeMutableRawPointer(d0 + ox + 1).storeBytes(of: v.oddHalf, as: SIMD8<Float>.self) }
                        ox += 8
                    }
                    while 2 * ox < w {
                        if use1 { d1[ox] = sr[2 * ox] }
                        if 2 * ox + 1 < w {
                            if use2 { d2[ox] = sr[2 * ox + 1] }
                            if use0 && ox + 1 < ow { d0[ox + 1] = sr[2 * ox + 1] }
                        }
                        ox += 1
                    }
                    if use0 { d0[ow] = 0 }
                }
            }
        }

        /// Stride 1 with W a multiple of 16: per channel and row, each 16-float vector of the
        /// row loaded once (aligned) for copy kx = 1, the copies kx = 0 and 2 from loads one
        /// float off inside the row and, at the row's ends, from that vector moved by one lane
        /// with a zero shifted in (nothing outside the row is read; no masks). Row r of
        /// `fillChannelGroup` channels before row r + 1, as in `stride2Fill`.
        @inline(__always)
        private func stride1Fill(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, channels: Int,
                                 height h: Int, width w: Int, used: Int) {
            typealias V = SIMD16<Float>
            let cs = copyStride, n = h &* w
            let use0 = used & 1 != 0, use1 = used & 2 != 0, use2 = used & 4 != 0
            let group = fillChannelGroup
            var c0 = 0
            while c0 < channels {
                let c1 = min(c0 &+ group, channels)
                for r in 0..<h {
                    for c in c0..<c1 {
                        let sc = UnsafeRawPointer(src + c &* n)
                        let d = UnsafeMutableRawPointer(dst + c &* channelStride + w)
                        let row = 4 &* r &* w
                        var x = 0
                        while x < w {
                            let at = row &+ 4 &* x
                            let v = sc.loadUnaligned(fromByteOffset: at, as: V.self)
                            if use1 { d.storeBytes(of: v, toByteOffset: 4 &* cs &+ at, as: V.self) }
                            if use0 {
                                var u: V
                                if x == 0 {
                                    u = V(0, v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12],
                                          v[13], v[14])
                                } else {
                                    u = sc.loadUnaligned(fromByteOffset: at &- 4, as: V.self)
                                }
                                d.storeBytes(of: u, toByteOffset: at, as: V.self)
                            }
                            if use2 {
                                var u: V
                                if x &+ 16 == w {
                                    u = V(v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13],
                                          v[14], v[15], 0)
                                } else {
                                    u = sc.loadUnaligned(fromByteOffset: at &+ 4, as: V.self)
                                }
                                d.storeBytes(of: u, toByteOffset: 8 &* cs &+ at, as: V.self)
                            }
                            x &+= 16
                        }
                    }
                }
                c0 = c1
            }
        }

        /// Stride 2 with W a multiple of 16 and H even: input row y = 2i + e goes to row i + e
        /// of the copies with py = 1 − e, split into its even columns (kx = 1), odd columns
        /// (kx = 2) and odd columns one to the right (kx = 0, column 0 zero), 8 outputs per
        /// 16-float load (16 per 32-float load with whole-vector stores when OW is a multiple
        /// of 16); no per-row restoring of spilled floats, and the copy checks made once per
        /// row. With `fillChannelGroup` 8 (planes of a page or more) rows are taken in order for
        /// 8 channels at a time, row y of each before row y + 1: reading several pages side by
        /// side keeps more lines in flight from memory than one page after another.
        @inline(__always)
        private func stride2Fill(_ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, channels: Int,
                                 height h: Int, width w: Int, used: Int) {
            typealias V = SIMD16<Float>
            let ow = width, cs = copyStride
            // Input row y of channel c: row y / 2 + e of the copies with parity py = 1 − e.
            @inline(__always) func row(_ c: Int, _ y: Int) {
                let e = y & 1, i = y >> 1, py = 1 - e
                let use0 = used & (1 << py) != 0, use1 = used & (1 << (2 + py)) != 0, use2 = used & (1 << (4 + py)) != 0
                if !(use0 || use1 || use2) { return }
                let d0 = UnsafeMutableRawPointer(dst + c &* channelStride + py * cs + e * ow), d1 = d0 + 8 * cs
                let d2 = d1 + 8 * cs
                let sr = UnsafeRawPointer(src + (c &* h &+ y) &* w), o = 4 &* i &* ow
                var ox = 0
                if ow % 16 == 0 {
                    // 16 outputs per copy from two 16-float loads: whole-vector stores.
                    while ox < ow {
                        let v = sr.loadUnaligned(fromByteOffset: 8 &* ox, as: SIMD32<Float>.self)
                        let at = o &+ 4 &* ox
                        if use1 { d1.storeBytes(of: v.evenHalf, toByteOffset: at, as: V.self) }
                        if use2 { d2.storeBytes(of: v.oddHalf, toByteOffset: at, as: V.self) }
                        if use0 {
                            var u: V
                            if ox == 0 {
                                let q = v.oddHalf
                                u = V(0, q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7], q[8], q[9], q[10], q[11], q[12],
                                      q[13], q[14])
                            } else {
                                u = sr.loadUnaligned(fromByteOffset: 8 &* ox &- 4, as: SIMD32<Float>.self).evenHalf
                            }
                            d0.storeBytes(of: u, toByteOffset: at, as: V.self)
                        }
                        ox &+= 16
                    }
                    return
                }
                while ox < ow {
                    let v = sr.loadUnaligned(fromByteOffset: 8 &* ox, as: V.self)
                    let at = o &+ 4 &* ox
                    if use1 { d1.storeBytes(of: v.evenHalf, toByteOffset: at, as: V8.self) }
                    if use2 { d2.storeBytes(of: v.oddHalf, toByteOffset: at, as: V8.self) }
                    if use0 {
                        // x[2·ox − 1]: the odd columns moved up one lane, the row's first zero.
                        var u: V8
                        if ox == 0 {
                            let odd = v.oddHalf
                            u = V8(0, odd[0], odd[1], odd[2], odd[3], odd[4], odd[5], odd[6])
                        } else {
                            u = sr.loadUnaligned(fromByteOffset: 8 &* ox &- 4, as: V.self).evenHalf
                        }
                        d0.storeBytes(of: u, toByteOffset: at, as: V8.self)
                    }
                    ox &+= 8
                }
            }
            let group = fillChannelGroup
            if group == 1 {
                // One channel at a time, its even rows, then its odd ones (the copies of one
                // parity written in order).
                for c in 0..<channels {
                    for e in 0..<2 { for i in 0..<h / 2 { row(c, 2 &* i &+ e) } }
                }
                return
            }
            var c0 = 0
            while c0 < channels {
                let c1 = min(c0 &+ group, channels)
                for y in 0..<h { for c in c0..<c1 { row(c, y) } }
                c0 = c1
            }
        }
    }
}

/// dst[p] = src[p + kx − 1] for p in 0..<n, zero where that column falls outside its row
/// of `w` (p mod w = 0 for kx = 0, w − 1 for kx = 2): 16-float loads one float off, the
/// edge columns masked with `masks[p mod w]` (`Shifted.edgeMask0/2`); the first (kx = 0)
/// or last (kx = 2) full vector is shifted in registers so that nothing outside src is read.
@inline(__always)
func shiftedPlane(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ n: Int, _ w: Int, kx: Int,
                  _ masks: UnsafePointer<SIMD16<UInt32>>) {
    typealias V = SIMD16<Float>
    typealias U = SIMD16<UInt32>
    let sr = UnsafeRawPointer(src), d = UnsafeMutableRawPointer(dst)
    let full = n / 16 * 16, advance = 16 % w
    @inline(__always) func masked(_ v: V, _ m: Int) -> V { unsafeBitCast(unsafeBitCast(v, to: U.self) & masks[m], to: V.self) }
    var p = 0, m = 0  // m = p mod w
    if kx == 0 {
        if full > 0 {
            let v = sr.loadUnaligned(as: V.self)
            var e = V()
            for i in 1..<16 { e[i] = v[i - 1] }
            d.storeBytes(of: masked(e, 0), as: V.self)
            p = 16
            m = advance
        }
        while p < full {
            d.storeBytes(of: masked(sr.loadUnaligned(fromByteOffset: 4 * p - 4, as: V.self), m), toByteOffset: 4 * p, as: V.self)
            p += 16
            m += advance
            if m >= w { m -= w }
        }
        while p < n { dst[p] = p % w == 0 ? 0 : src[p - 1]; p += 1 }
    } else {
        // Vectors that read src[p + 1 ..< p + 17] inside the plane.
        while p + 16 < n && p < full {
            d.storeBytes(of: masked(sr.loadUnaligned(fromByteOffset: 4 * p + 4, as: V.self), m), toByteOffset: 4 * p, as: V.self)
            p += 16
            m += advance
            if m >= w { m -= w }
        }
        if p < full {
            // The plane's last 16 floats (n a multiple of 16).
            let v = sr.loadUnaligned(fromByteOffset: 4 * p, as: V.self)
            var e = V()
            for i in 0..<15 { e[i] = v[i + 1] }
            d.storeBytes(of: masked(e, m), toByteOffset: 4 * p, as: V.self)
            p += 16
        }
        while p < n { dst[p] = p % w == w - 1 ? 0 : src[p + 1]; p += 1 }
    }
}
