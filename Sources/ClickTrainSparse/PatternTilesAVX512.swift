// 512-bit versions of the pattern-conv gather tiles of `Generated/PatternTiles.swift`
// (forward and input gradient), built when the target CPU has AVX-512 (Package.swift
// defines AVX512). The same tiles of 64, 32 and 16 positions, held in SIMD16 registers:
// per tap half the loads and multiply-adds of the SIMD8 tiles. The taps are dealt
// round-robin over two or four accumulator sets so that enough independent multiply-adds
// are in flight; the sets are summed once at the end.
#if AVX512
typealias V16 = SIMD16<Float>

/// dst[0..<64] = initial + Σ over taps i in i0..<i1 of w[i] · base[off[i] + 0..<64].
@inline(__always)
func gatherTile64x16(_ dst: UnsafeMutablePointer<Float>, _ initial: Float, _ base: UnsafePointer<Float>, _ i0: Int,
                     _ i1: Int, _ off: UnsafePointer<Int32>, _ w: UnsafePointer<Float>) {
    let b = UnsafeRawPointer(base)
    var a0 = V16(repeating: initial), a1 = a0, a2 = a0, a3 = a0
    var c0 = V16(repeating: 0), c1 = c0, c2 = c0, c3 = c0
    var i = i0
    while i + 2 <= i1 {
        let w0 = V16(repeating: w[i]), s0 = b + Int(off[i]) &* 4
        let w1 = V16(repeating: w[i + 1]), s1 = b + Int(off[i + 1]) &* 4
        a0.addProduct(w0, s0.loadUnaligned(fromByteOffset: 0, as: V16.self))
        a1.addProduct(w0, s0.loadUnaligned(fromByteOffset: 64, as: V16.self))
        a2.addProduct(w0, s0.loadUnaligned(fromByteOffset: 128, as: V16.self))
        a3.addProduct(w0, s0.loadUnaligned(fromByteOffset: 192, as: V16.self))
        c0.addProduct(w1, s1.loadUnaligned(fromByteOffset: 0, as: V16.self))
        c1.addProduct(w1, s1.loadUnaligned(fromByteOffset: 64, as: V16.self))
        c2.addProduct(w1, s1.loadUnaligned(fromByteOffset: 128, as: V16.self))
        c3.addProduct(w1, s1.loadUnaligned(fromByteOffset: 192, as: V16.self))
        i += 2
    }
    if i < i1 {
        let w0 = V16(repeating: w[i]), s0 = b + Int(off[i]) &* 4
        a0.addProduct(w0, s0.loadUnaligned(fromByteOffset: 0, as: V16.self))
        a1.addProduct(w0, s0.loadUnaligned(fromByteOffset: 64, as: V16.self))
        a2.addProduct(w0, s0.loadUnaligned(fromByteOffset: 128, as: V16.self))
        a3.addProduct(w0, s0.loadUnaligned(fromByteOffset: 192, as: V16.self))
    }
    let d = UnsafeMutableRawPointer(dst)
    d.storeBytes(of: a0 + c0, toByteOffset: 0, as: V16.self)
    d.storeBytes(of: a1 + c1, toByteOffset: 64, as: V16.self)
    d.storeBytes(of: a2 + c2, toByteOffset: 128, as: V16.self)
    d.storeBytes(of: a3 + c3, toByteOffset: 192, as: V16.self)
}

/// dst[0..<32] = initial + Σ over taps i in i0..<i1 of w[i] · base[off[i] + 0..<32].
@inline(__always)
func gatherTile32x16(_ dst: UnsafeMutablePointer<Float>, _ initial: Float, _ base: UnsafePointer<Float>, _ i0: Int,
                     _ i1: Int, _ off: UnsafePointer<Int32>, _ w: UnsafePointer<Float>) {
    let b = UnsafeRawPointer(base)
    var a0 = V16(repeating: initial), a1 = a0
    var c0 = V16(repeating: 0), c1 = c0, e0 = c0, e1 = c0, g0 = c0, g1 = c0
    var i = i0
    while i + 4 <= i1 {
        let w0 = V16(repeating: w[i]), s0 = b + Int(off[i]) &* 4
        let w1 = V16(repeating: w[i + 1]), s1 = b + Int(off[i + 1]) &* 4
        let w2 = V16(repeating: w[i + 2]), s2 = b + Int(off[i + 2]) &* 4
        let w3 = V16(repeating: w[i + 3]), s3 = b + Int(off[i + 3]) &* 4
        a0.addProduct(w0, s0.loadUnaligned(fromByteOffset: 0, as: V16.self))
        a1.addProduct(w0, s0.loadUnaligned(fromByteOffset: 64, as: V16.self))
        c0.addProduct(w1, s1.loadUnaligned(fromByteOffset: 0, as: V16.self))
        c1.addProduct(w1, s1.loadUnaligned(fromByteOffset: 64, as: V16.self))
        e0.addProduct(w2, s2.loadUnaligned(fromByteOffset: 0, as: V16.self))
        e1.addProduct(w2, s2.loadUnaligned(fromByteOffset: 64, as: V16.self))
        g0.addProduct(w3, s3.loadUnaligned(fromByteOffset: 0, as: V16.self))
        g1.addProduct(w3, s3.loadUnaligned(fromByteOffset: 64, as: V16.self))
        i += 4
    }
    while i < i1 {
        let w0 = V16(repeating: w[i]), s0 = b + Int(off[i]) &* 4
        a0.addProduct(w0, s0.loadUnaligned(fromByteOffset: 0, as: V16.self))
        a1.addProduct(w0, s0.loadUnaligned(fromByteOffset: 64, as: V16.self))
        i += 1
    }
    let d = UnsafeMutableRawPointer(dst)
    d.storeBytes(of: (a0 + c0) + (e0 + g0), toByteOffset: 0, as: V16.self)
    d.storeBytes(of: (a1 + c1) + (e1 + g1), toByteOffset: 64, as: V16.self)
}

/// dst[0..<16] = initial + Σ over taps i in i0..<i1 of w[i] · base[off[i] + 0..<16].
@inline(__always)
func gatherTile16x16(_ dst: UnsafeMutablePointer<Float>, _ initial: Float, _ base: UnsafePointer<Float>, _ i0: Int,
                     _ i1: Int, _ off: UnsafePointer<Int32>, _ w: UnsafePointer<Float>) {
    let b = UnsafeRawPointer(base)
    var a = V16(repeating: initial)
    var c = V16(repeating: 0), e = c, g = c
    var i = i0
    while i + 4 <= i1 {
        a.addProduct(V16(repeating: w[i]), (b + Int(off[i]) &* 4).loadUnaligned(as: V16.self))
        c.addProduct(V16(repeating: w[i + 1]), (b + Int(off[i + 1]) &* 4).loadUnaligned(as: V16.self))
        e.addProduct(V16(repeating: w[i + 2]), (b + Int(off[i + 2]) &* 4).loadUnaligned(as: V16.self))
        g.addProduct(V16(repeating: w[i + 3]), (b + Int(off[i + 3]) &* 4).loadUnaligned(as: V16.self))
        i += 4
    }
    while i < i1 {
        a.addProduct(V16(repeating: w[i]), (b + Int(off[i]) &* 4).loadUnaligned(as: V16.self))
        i += 1
    }
    UnsafeMutableRawPointer(dst).storeBytes(of: (a + c) + (e + g), as: V16.self)
}
#endif
