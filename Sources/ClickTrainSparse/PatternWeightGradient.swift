// The weight gradient's kernels: by (input channel, pattern) group over the whole plane,
// by vertical tap pairs, and per tap (`weightTile`).

/// A number of kernels one pass of `weightGradPlane` takes (a type, so each count gets its
/// own specialised loop with only its accumulators).
protocol PlaneKernelCount { static var n: Int { get } }
enum PlaneKernels2: PlaneKernelCount { static var n: Int { 2 } }
enum PlaneKernels3: PlaneKernelCount { static var n: Int { 3 } }
enum PlaneKernels4: PlaneKernelCount { static var n: Int { 4 } }
enum PlaneKernels5: PlaneKernelCount { static var n: Int { 5 } }
enum PlaneKernels6: PlaneKernelCount { static var n: Int { 6 } }


/// One image's weight gradient for planes of `positions` floats (a multiple of 32), kernels
/// grouped by (input channel, pattern): per group, up to six
/// kernels in one pass hold their 4 x 4 tap sums in registers over the whole plane, each
/// 16-position step loading the group's four input taps once and each kernel's output
/// gradient once; the sums are added to the partials once per kernel and image.
@inline(__always)
func weightGradPlane(_ dw: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ xp: UnsafePointer<Float>,
                     _ offsets: UnsafePointer<Int32>, _ start: UnsafePointer<Int32>, _ filter: UnsafePointer<Int32>,
                     _ slot: UnsafePointer<Int32>, groups: Int, positions: Int, images: Int = 1, xImage: Int = 0,
                     yImage: Int = 0) {
    typealias V = SIMD16<Float>
    let x = UnsafeRawPointer(xp), g = UnsafeRawPointer(dy), out = UnsafeMutableRawPointer(dw)
    let bytes = 4 &* positions, im = (images, xImage, yImage)
    for gi in 0..<groups {
        let o = offsets + 4 &* gi
        let t = (x + 4 &* Int(o[0]), x + 4 &* Int(o[1]), x + 4 &* Int(o[2]), x + 4 &* Int(o[3]))
        var j = Int(start[gi])
        let end = Int(start[gi + 1])
        while end &- j > 6 {
            planePass(PlaneKernels6.self, out, g, bytes, filter + j, slot + j, t, im)
            j &+= 6
        }
        switch end &- j {
        case 6: planePass(PlaneKernels6.self, out, g, bytes, filter + j, slot + j, t, im)
        case 5: planePass(PlaneKernels5.self, out, g, bytes, filter + j, slot + j, t, im)
        case 4: planePass(PlaneKernels4.self, out, g, bytes, filter + j, slot + j, t, im)
        case 3: planePass(PlaneKernels3.self, out, g, bytes, filter + j, slot + j, t, im)
        case 2: planePass(PlaneKernels2.self, out, g, bytes, filter + j, slot + j, t, im)
        case 1:
            // One kernel: two sums per tap (even and odd steps), eight chains.
            let (ta, tb, tc, td) = t
            let y0 = g + bytes &* Int(filter[j])
            var a0 = V(), b0 = V(), c0 = V(), d0 = V(), a1 = V(), b1 = V(), c1 = V(), d1 = V()
            for i in 0..<images {
            let xo = i &* xImage, yo = i &* yImage
            var v = 0
            while v < bytes {
                let e0 = y0.loadUnaligned(fromByteOffset: yo &+ v, as: V.self), e1 = y0.loadUnaligned(fromByteOffset: yo &+ v &+ 64, as: V.self)
                a0.addProduct(e0, ta.loadUnaligned(fromByteOffset: xo &+ v, as: V.self))
                b0.addProduct(e0, tb.loadUnaligned(fromByteOffset: xo &+ v, as: V.self))
                c0.addProduct(e0, tc.loadUnaligned(fromByteOffset: xo &+ v, as: V.self))
                d0.addProduct(e0, td.loadUnaligned(fromByteOffset: xo &+ v, as: V.self))
                a1.addProduct(e1, ta.loadUnaligned(fromByteOffset: xo &+ v &+ 64, as: V.self))
                b1.addProduct(e1, tb.loadUnaligned(fromByteOffset: xo &+ v &+ 64, as: V.self))
                c1.addProduct(e1, tc.loadUnaligned(fromByteOffset: xo &+ v &+ 64, as: V.self))
                d1.addProduct(e1, td.loadUnaligned(fromByteOffset: xo &+ v &+ 64, as: V.self))
                v &+= 128
            }
            }
            addTapSums(out, slot[0 &+ j], a0 + a1, b0 + b1, c0 + c1, d0 + d1)
        default: break
        }
    }
}

/// partials[slot·16 ..< slot·16 + 64] += the four taps' 16-lane sums.
@inline(__always)
func addTapSums(_ out: UnsafeMutableRawPointer, _ slot: Int32, _ a: SIMD16<Float>, _ b: SIMD16<Float>, _ c: SIMD16<Float>,
                _ d: SIMD16<Float>) {
    typealias V = SIMD16<Float>
    let at = 64 &* Int(slot)
    out.storeBytes(of: out.loadUnaligned(fromByteOffset: at, as: V.self) + a, toByteOffset: at, as: V.self)
    out.storeBytes(of: out.loadUnaligned(fromByteOffset: at &+ 64, as: V.self) + b, toByteOffset: at &+ 64, as: V.self)
    out.storeBytes(of: out.loadUnaligned(fromByteOffset: at &+ 128, as: V.self) + c, toByteOffset: at &+ 128, as: V.self)
    out.storeBytes(of: out.loadUnaligned(fromByteOffset: at &+ 192, as: V.self) + d, toByteOffset: at &+ 192, as: V.self)
}

/// One pass of `weightGradPlane` over N.n kernels (2 to 6) of a group: 4·N.n sums.
@inline(__always)
func planePass<N: PlaneKernelCount>(_: N.Type, _ out: UnsafeMutableRawPointer, _ g: UnsafeRawPointer, _ bytes: Int,
                                    _ filter: UnsafePointer<Int32>, _ slot: UnsafePointer<Int32>,
                                    _ t: (UnsafeRawPointer, UnsafeRawPointer, UnsafeRawPointer, UnsafeRawPointer),
                                    _ im: (Int, Int, Int)) {
    typealias V = SIMD16<Float>
    let n = N.n, (ta, tb, tc, td) = t
    @inline(__always) func plane(_ i: Int) -> UnsafeRawPointer { g + bytes &* Int(filter[min(i, n &- 1)]) }
    let y0 = plane(0), y1 = plane(1), y2 = plane(2), y3 = plane(3), y4 = plane(4), y5 = plane(5)
    var a0 = V(), b0 = V(), c0 = V(), d0 = V(), a1 = V(), b1 = V(), c1 = V(), d1 = V()
    var a2 = V(), b2 = V(), c2 = V(), d2 = V(), a3 = V(), b3 = V(), c3 = V(), d3 = V()
    var a4 = V(), b4 = V(), c4 = V(), d4 = V(), a5 = V(), b5 = V(), c5 = V(), d5 = V()
    for i in 0..<im.0 {
    let xo = i &* im.1, yo = i &* im.2
    var v = 0
    while v < bytes {
        let xa = ta.loadUnaligned(fromByteOffset: xo &+ v, as: V.self), xb = tb.loadUnaligned(fromByteOffset: xo &+ v, as: V.self)
        let xc = tc.loadUnaligned(fromByteOffset: xo &+ v, as: V.self), xd = td.loadUnaligned(fromByteOffset: xo &+ v, as: V.self)
        // One kernel's output gradient at this step times the four taps, into its four sums.
        @inline(__always) func step(_ y: UnsafeRawPointer, _ a: inout V, _ b: inout V, _ c: inout V, _ d: inout V) {
            let e = y.loadUnaligned(fromByteOffset: yo &+ v, as: V.self)
            a.addProduct(e, xa); b.addProduct(e, xb); c.addProduct(e, xc); d.addProduct(e, xd)
        }
        step(y0, &a0, &b0, &c0, &d0)
        step(y1, &a1, &b1, &c1, &d1)
        if n > 2 { step(y2, &a2, &b2, &c2, &d2) }
        if n > 3 { step(y3, &a3, &b3, &c3, &d3) }
        if n > 4 { step(y4, &a4, &b4, &c4, &d4) }
        if n > 5 { step(y5, &a5, &b5, &c5, &d5) }
        v &+= 64
    }
    }
    addTapSums(out, slot[0], a0, b0, c0, d0)
    addTapSums(out, slot[1], a1, b1, c1, d1)
    if n > 2 { addTapSums(out, slot[2], a2, b2, c2, d2) }
    if n > 3 { addTapSums(out, slot[3], a3, b3, c3, d3) }
    if n > 4 { addTapSums(out, slot[4], a4, b4, c4, d4) }
    if n > 5 { addTapSums(out, slot[5], a5, b5, c5, d5) }
}

/// Weight gradient of one filter over 128 positions (its output gradient `dy[0..<128]` in
/// eight registers) at stride 1 with OW = 16·`vectorsPerRow` (1 or 2): each pair j in
/// p0..<p1 of vertically adjacent taps reads x[pOff[j] ..< pOff[j] + 128 + OW] once, the
/// top tap's products from its first 128 floats and the bottom tap's from the same vectors
/// one row on (8 + OW / 16 loads for 16 multiply-adds, against 16 for two single taps); the
/// 16-lane partial sums at slots pSlot[2j], pSlot[2j + 1] updated once. Single taps j in
/// s0..<s1 as `weightTile16`, at slot sSlot[j].
@inline(__always)
func weightPairTile(_ dw: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>,
                    vectorsPerRow: Int, _ p0: Int32, _ p1: Int32, _ pOff: UnsafePointer<Int32>,
                    _ pSlot: UnsafePointer<Int32>, _ s0: Int32, _ s1: Int32, _ sOff: UnsafePointer<Int32>,
                    _ sSlot: UnsafePointer<Int32>) {
    typealias V = SIMD16<Float>
    let g = UnsafeRawPointer(dy), b = UnsafeRawPointer(x), out = UnsafeMutableRawPointer(dw)
    let d0 = g.loadUnaligned(as: V.self), d1 = g.loadUnaligned(fromByteOffset: 64, as: V.self)
    let d2 = g.loadUnaligned(fromByteOffset: 128, as: V.self), d3 = g.loadUnaligned(fromByteOffset: 192, as: V.self)
    let d4 = g.loadUnaligned(fromByteOffset: 256, as: V.self), d5 = g.loadUnaligned(fromByteOffset: 320, as: V.self)
    let d6 = g.loadUnaligned(fromByteOffset: 384, as: V.self), d7 = g.loadUnaligned(fromByteOffset: 448, as: V.self)
    @inline(__always) func add(_ slot: Int32, _ v: V) {
        let o = 64 &* Int(slot)
        out.storeBytes(of: out.loadUnaligned(fromByteOffset: o, as: V.self) + v, toByteOffset: o, as: V.self)
    }
    var j = Int(p0)
    while j < Int(p1) {
        let s = b + Int(pOff[j]) &* 4
        let x0 = s.loadUnaligned(as: V.self), x1 = s.loadUnaligned(fromByteOffset: 64, as: V.self)
        let x2 = s.loadUnaligned(fromByteOffset: 128, as: V.self), x3 = s.loadUnaligned(fromByteOffset: 192, as: V.self)
        let x4 = s.loadUnaligned(fromByteOffset: 256, as: V.self), x5 = s.loadUnaligned(fromByteOffset: 320, as: V.self)
        let x6 = s.loadUnaligned(fromByteOffset: 384, as: V.self), x7 = s.loadUnaligned(fromByteOffset: 448, as: V.self)
        let x8 = s.loadUnaligned(fromByteOffset: 512, as: V.self)
        var a0 = d0 * x0, a1 = d1 * x1
        a0.addProduct(d2, x2); a1.addProduct(d3, x3); a0.addProduct(d4, x4); a1.addProduct(d5, x5)
        a0.addProduct(d6, x6); a1.addProduct(d7, x7)
        var c0: V, c1: V
        if vectorsPerRow == 1 {
            c0 = d0 * x1; c1 = d1 * x2
            c0.addProduct(d2, x3); c1.addProduct(d3, x4); c0.addProduct(d4, x5); c1.addProduct(d5, x6)
            c0.addProduct(d6, x7); c1.addProduct(d7, x8)
        } else {
            let x9 = s.loadUnaligned(fromByteOffset: 576, as: V.self)
            c0 = d0 * x2; c1 = d1 * x3
            c0.addProduct(d2, x4); c1.addProduct(d3, x5); c0.addProduct(d4, x6); c1.addProduct(d5, x7)
            c0.addProduct(d6, x8); c1.addProduct(d7, x9)
        }
        add(pSlot[2 &* j], a0 + a1)
        add(pSlot[2 &* j &+ 1], c0 + c1)
        j &+= 1
    }
    j = Int(s0)
    while j < Int(s1) {
        let s = b + Int(sOff[j]) &* 4
        var a0 = d0 * s.loadUnaligned(as: V.self), a1 = d1 * s.loadUnaligned(fromByteOffset: 64, as: V.self)
        a0.addProduct(d2, s.loadUnaligned(fromByteOffset: 128, as: V.self))
        a1.addProduct(d3, s.loadUnaligned(fromByteOffset: 192, as: V.self))
        a0.addProduct(d4, s.loadUnaligned(fromByteOffset: 256, as: V.self))
        a1.addProduct(d5, s.loadUnaligned(fromByteOffset: 320, as: V.self))
        a0.addProduct(d6, s.loadUnaligned(fromByteOffset: 384, as: V.self))
        a1.addProduct(d7, s.loadUnaligned(fromByteOffset: 448, as: V.self))
        add(sSlot[j], a0 + a1)
        j &+= 1
    }
}

/// `weightTile16/8/4/2/1` by tile width in floats.
@inline(__always)
func weightTile(_ width: Int, _ dw: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>,
                _ i0: Int, _ i1: Int, _ off: UnsafePointer<Int32>) {
    switch width {
    case 128: weightTile16(dw, dy, x, i0, i1, off)
    case 64: weightTile8(dw, dy, x, i0, i1, off)
    case 32: weightTile4(dw, dy, x, i0, i1, off)
    case 16: weightTile2(dw, dy, x, i0, i1, off)
    default: weightTile1(dw, dy, x, i0, i1, off)
    }
}

/// Σ over threads t of the `weightLanes` partial sums of tap i, dw[t][i·lanes ..< (i + 1)·lanes]:
/// added lane-wise in thread order, then across the lanes.
@inline(__always)
func sumPartials(_ dw: UnsafePointer<UnsafeMutablePointer<Float>>, _ threads: Int, _ i: Int) -> Float {
    if weightLanes == 16 {
        var v = UnsafeRawPointer(dw[0] + 16 * i).loadUnaligned(as: SIMD16<Float>.self)
        for t in 1..<max(threads, 1) { v += UnsafeRawPointer(dw[t] + 16 * i).loadUnaligned(as: SIMD16<Float>.self) }
        return v.sum()
    }
    var v = UnsafeRawPointer(dw[0] + weightLanes * i).loadUnaligned(as: V8.self)
    for t in 1..<max(threads, 1) { v += UnsafeRawPointer(dw[t] + weightLanes * i).loadUnaligned(as: V8.self) }
    return v.sum()
}
