// SIMD helpers shared by the pattern convolution's paths.

typealias V8 = SIMD8<Float>

/// The inputs of a (channel, pattern) group's four taps, 64 floats each, as sixteen vectors
/// (a0-a3 the first tap's, …, d0-d3 the fourth's).
@inline(__always)
func groupTaps(_ x: UnsafeRawPointer, _ o: UnsafePointer<Int32>)
    -> (SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>,
        SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>,
        SIMD16<Float>, SIMD16<Float>) {
    typealias V = SIMD16<Float>
    func tap(_ t: Int) -> (V, V, V, V) {
        let p = x + 4 * Int(o[t])
        return (p.loadUnaligned(as: V.self), p.loadUnaligned(fromByteOffset: 64, as: V.self),
                p.loadUnaligned(fromByteOffset: 128, as: V.self), p.loadUnaligned(fromByteOffset: 192, as: V.self))
    }
    let (a, b, c, d) = (tap(0), tap(1), tap(2), tap(3))
    return (a.0, a.1, a.2, a.3, b.0, b.1, b.2, b.3, c.0, c.1, c.2, c.3, d.0, d.1, d.2, d.3)
}

/// max(v, 0) lane-wise as a select (the standard library's `pointwiseMax` is not inlined
/// here: it would cost a function call per eight values).
@inline(__always)
func relu8(_ v: V8) -> V8 {
    var r = v
    r.replace(with: V8(repeating: 0), where: v .< V8(repeating: 0))
    return r
}

/// dst[0..<count] = max(0, src[0..<count]) (src and dst may be the same).
@inline(__always)
func reluInto(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ count: Int) {
    let t = UnsafeRawPointer(src), d = UnsafeMutableRawPointer(dst)
    var j = 0
    while j + 8 <= count {
        d.storeBytes(of: relu8(t.loadUnaligned(fromByteOffset: j * 4, as: V8.self)), toByteOffset: j * 4, as: V8.self)
        j += 8
    }
    while j < count { dst[j] = max(src[j], 0); j += 1 }
}

/// dst[0..<count] = src + residual, then max(0, ·) when `relu` (src and dst may be the same).
@inline(__always)
func addResidual(_ src: UnsafePointer<Float>, _ res: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>,
                 _ count: Int, relu: Bool) {
    let t = UnsafeRawPointer(src), r = UnsafeRawPointer(res), d = UnsafeMutableRawPointer(dst)
    var j = 0
    while j + 8 <= count {
        let v = t.loadUnaligned(fromByteOffset: j * 4, as: V8.self) + r.loadUnaligned(fromByteOffset: j * 4, as: V8.self)
        d.storeBytes(of: relu ? relu8(v) : v, toByteOffset: j * 4, as: V8.self)
        j += 8
    }
    while j < count {
        let v = src[j] + res[j]
        dst[j] = relu ? max(v, 0) : v
        j += 1
    }
}

/// dst[0..<count] = src[0..<count] for short runs (8-64 floats): an inline vector copy,
/// not a memmove call.
@inline(__always)
func copyFloats(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, _ count: Int) {
    let t = UnsafeRawPointer(src), d = UnsafeMutableRawPointer(dst)
    var j = 0
    while j + 8 <= count {
        d.storeBytes(of: t.loadUnaligned(fromByteOffset: j * 4, as: V8.self), toByteOffset: j * 4, as: V8.self)
        j += 8
    }
    while j < count { dst[j] = src[j]; j += 1 }
}
