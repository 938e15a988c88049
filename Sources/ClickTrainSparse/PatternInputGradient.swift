// The stride-2 input gradient's kernels: by source for output widths 8-64, the parity
// planes' interleave, and the tiles of the padded grid for odd sizes.

extension PatternConvKernel {
    /// Stride-2 input gradient: tiles of 64, 32, 16 or 8 positions over the parity planes
    /// of the output-gradient grid: where each starts and which plane (list row) it uses.
    struct Tiles {
        var start: [Int] = [], width: [Int] = [], phase: [Int] = []

        /// Per tile three Ints: start, width, phase (read through a pointer in the kernels'
        /// loops: array reads inside the parallel closures cost retains of shared buffers).
        var packed: [Int] {
            var p: [Int] = []
            p.reserveCapacity(3 * start.count)
            for i in 0..<start.count { p += [start[i], width[i], phase[i]] }
            return p
        }

        /// Tiles over positions lo..<lo + count (count whole vectors) for parity plane `phase`.
        mutating func add(lo: Int, count: Int, phase ph: Int) {
            var t = 0
            while t < count {
                let left = count - t
                let w = left >= 64 ? 64 : left >= 32 ? 32 : left >= 16 ? 16 : 8
                start.append(lo + t); width.append(w); phase.append(ph)
                t += w
            }
        }
    }
}

/// One image's stride-2 input gradient by source (OW in {8, 16, 32, 64}, OH·OW a multiple
/// of 64): per 64 positions of the parity planes (outermost, so their sources stay in L1
/// across channels) and per input channel, `sourceTile` over the output gradient `dy` and
/// its kx = 2 copy `dyp` (entries at `read`); the last 64 positions read `tail` instead of
/// dy (entries at `tailRead`: each filter's last 64 positions, then zeros, so row OH reads
/// zero and nothing past dy is read). The planes are interleaved straight into dx.
@inline(__always)
func stride2InputGradient(_ dx: UnsafeMutablePointer<Float>, _ dy: UnsafePointer<Float>, _ tail: UnsafePointer<Float>,
                          _ dyp: UnsafePointer<Float>, _ start: UnsafePointer<Int32>, _ read: UnsafePointer<Int32>,
                          _ tailRead: UnsafePointer<Int32>, _ w: UnsafePointer<Float>, channels c: Int, rows oh: Int,
                          width ow: Int, streaming: Bool) {
    let size = oh &* ow, plane = 4 &* size
    var q = 0
    while q < size {
        let last = q &+ 64 == size
        let b = last ? UnsafeRawPointer(tail) : UnsafeRawPointer(dy + q), off = last ? tailRead : read
        let cb = UnsafeRawPointer(dyp + q)
        for ci in 0..<c {
            let d = UnsafeMutableRawPointer(dx + ci &* plane), r = start + 4 &* ci
            if weightLanes == 16 {
                let (e, f, g, h) = sourceTile(SourceTile64.self, b, cb, r, off, w)
                storeInterleaved(d, e.0, f.0, pos: q, a: 0, width: ow, streaming: streaming)
                storeInterleaved(d, e.1, f.1, pos: q &+ 16, a: 0, width: ow, streaming: streaming)
                storeInterleaved(d, e.2, f.2, pos: q &+ 32, a: 0, width: ow, streaming: streaming)
                storeInterleaved(d, e.3, f.3, pos: q &+ 48, a: 0, width: ow, streaming: streaming)
                storeInterleaved(d, g.0, h.0, pos: q, a: 1, width: ow, streaming: streaming)
                storeInterleaved(d, g.1, h.1, pos: q &+ 16, a: 1, width: ow, streaming: streaming)
                storeInterleaved(d, g.2, h.2, pos: q &+ 32, a: 1, width: ow, streaming: streaming)
                storeInterleaved(d, g.3, h.3, pos: q &+ 48, a: 1, width: ow, streaming: streaming)
                continue
            }
            for sub in 0..<4 {
                let at = 64 &* sub
                let (e, f, g, h) = sourceTile(SourceTile16.self, b + at, cb + at, r, off, w)
                storeInterleaved(d, e, f, pos: q &+ 16 &* sub, a: 0, width: ow, streaming: streaming)
                storeInterleaved(d, g, h, pos: q &+ 16 &* sub, a: 1, width: ow, streaming: streaming)
            }
        }
        q &+= 64
    }
}

/// The positions `sourceTile` computes per call: 64 (four 16-lane vectors per plane) on
/// AVX-512 builds; 16 (one) on AVX2, whose sixteen registers cannot hold four planes of
/// four vectors (the 64-position tile spilled, and ran slower than oneDNN's dense kernel).
protocol SourceTileWidth {
    associatedtype Q
    static var zero: Q { get }
    static func load(_ s: UnsafeRawPointer) -> Q
    static func add(_ a: inout Q, _ w: Float, _ s: Q)
}

enum SourceTile64: SourceTileWidth {
    typealias V = SIMD16<Float>
    typealias Q = (V, V, V, V)
    static var zero: Q { (V(), V(), V(), V()) }
    @inline(__always) static func load(_ s: UnsafeRawPointer) -> Q {
        (s.loadUnaligned(as: V.self), s.loadUnaligned(fromByteOffset: 64, as: V.self),
         s.loadUnaligned(fromByteOffset: 128, as: V.self), s.loadUnaligned(fromByteOffset: 192, as: V.self))
    }
    @inline(__always) static func add(_ a: inout Q, _ w: Float, _ s: Q) {
        let v = V(repeating: w)
        a.0.addProduct(v, s.0); a.1.addProduct(v, s.1); a.2.addProduct(v, s.2); a.3.addProduct(v, s.3)
    }
}

enum SourceTile16: SourceTileWidth {
    typealias Q = SIMD16<Float>
    static var zero: Q { Q() }
    @inline(__always) static func load(_ s: UnsafeRawPointer) -> Q { s.loadUnaligned(as: Q.self) }
    @inline(__always) static func add(_ a: inout Q, _ w: Float, _ s: Q) { a.addProduct(Q(repeating: w), s) }
}

/// One input channel's four parity planes (0, 0), (0, 1), (1, 0), (1, 1) at 64 or 16
/// positions (`T`), from its shift-class lists `r[0..<5]` (`PatternConvKernel.Plan.srcStart`):
/// kernel j reads the positions at `b + off[j]` (v = 0 classes) or `cb + off[j]` (v = 1, the
/// kx = 2 copy) once and multiplies them into every plane its class reaches, one broadcast
/// weight each.
@inline(__always)
func sourceTile<T: SourceTileWidth>(_: T.Type, _ b: UnsafeRawPointer, _ cb: UnsafeRawPointer, _ r: UnsafePointer<Int32>,
                                    _ off: UnsafePointer<Int32>, _ w: UnsafePointer<Float>) -> (T.Q, T.Q, T.Q, T.Q) {
    @inline(__always) func load(_ base: UnsafeRawPointer, _ j: Int) -> T.Q { T.load(base + Int(off[j]) &* 4) }
    var e = T.zero, f = e, g = e, h = e
    var j = Int(r[0])
    while j < Int(r[1]) {  // (0, 0): taps 4, 5, 7, 8 into the four planes
        let s = load(b, j), wj = w + 4 &* j
        T.add(&e, wj[0], s); T.add(&f, wj[1], s); T.add(&g, wj[2], s); T.add(&h, wj[3], s)
        j &+= 1
    }
    while j < Int(r[2]) {  // (1, 0): taps 1, 2 into planes (1, 0), (1, 1)
        let s = load(b, j)
        T.add(&g, w[4 &* j], s); T.add(&h, w[4 &* j &+ 1], s)
        j &+= 1
    }
    while j < Int(r[3]) {  // (0, 1): taps 3, 6 into planes (0, 1), (1, 1)
        let s = load(cb, j)
        T.add(&f, w[4 &* j], s); T.add(&h, w[4 &* j &+ 1], s)
        j &+= 1
    }
    while j < Int(r[4]) {  // (1, 1): tap 0 into plane (1, 1)
        T.add(&h, w[4 &* j], load(cb, j))
        j &+= 1
    }
    return (e, f, g, h)
}

/// Stores 16 positions (pos..<pos + 16 of an OH x OW parity-plane pair (a, 0), (a, 1)) of a
/// stride-2 input gradient: dx row 2i + a takes plane (a, 0) at its even columns and (a, 1)
/// at its odd ones. OW a multiple of 16 (one row) or OW = 8 (two rows).
@inline(__always)
func storeInterleaved(_ d: UnsafeMutableRawPointer, _ even: SIMD16<Float>, _ odd: SIMD16<Float>, pos: Int, a: Int,
                      width ow: Int, streaming: Bool) {
    var v = SIMD32<Float>()
    v.evenHalf = even
    v.oddHalf = odd
    let w = 2 &* ow
    if ow == 8 {
        let i = pos &>> 3
        let p0 = d + 4 &* (2 &* i &+ a) &* w, p1 = d + 4 &* (2 &* i &+ 2 &+ a) &* w
        if streaming {
            streamStore(v.lowHalf, p0)
            streamStore(v.highHalf, p1)
        } else {
            p0.storeBytes(of: v.lowHalf, as: SIMD16<Float>.self)
            p1.storeBytes(of: v.highHalf, as: SIMD16<Float>.self)
        }
    } else {
        let i = pos / ow, j = pos &- i &* ow
        let p = d + 4 &* ((2 &* i &+ a) &* w &+ 2 &* j)
        if streaming { streamStore(v, p) } else { p.storeBytes(of: v, as: SIMD32<Float>.self) }
    }
}

/// The stride-2 input gradient of one channel from its four parity planes (each rows x
/// width, width a multiple of 8, plane 2a + b holding (2i + a, 2j + b)): one flat loop of
/// 16-float stores (a call of `interleave` per row cost more than the stores).
@inline(__always)
func interleavePlanes(_ planes: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>, rows: Int, width: Int) {
    let size = rows &* width, w = 2 &* width
    let d = UnsafeMutableRawPointer(dst)
    for a in 0..<2 {
        let e = UnsafeRawPointer(planes + 2 &* a &* size), o = e + 4 &* size
        for i in 0..<rows {
            let src = 4 &* i &* width, at = 4 &* (2 &* i &+ a) &* w
            var j = 0
            while j < width {
                var v = SIMD16<Float>()
                v.evenHalf = e.loadUnaligned(fromByteOffset: src &+ 4 &* j, as: V8.self)
                v.oddHalf = o.loadUnaligned(fromByteOffset: src &+ 4 &* j, as: V8.self)
                d.storeBytes(of: v, toByteOffset: at &+ 8 &* j, as: SIMD16<Float>.self)
                j &+= 8
            }
        }
    }
}

/// dst[2j] = even[j], dst[2j + 1] = odd[j] for the `count` entries of dst (one row of a
/// stride-2 input gradient from two parity planes).
@inline(__always)
func interleave(_ even: UnsafePointer<Float>, _ odd: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>,
                count: Int) {
    let a = UnsafeRawPointer(even), b = UnsafeRawPointer(odd), d = UnsafeMutableRawPointer(dst)
    var j = 0
    while 2 * j + 32 <= count {
        var v = SIMD32<Float>()
        v.evenHalf = a.loadUnaligned(fromByteOffset: 4 * j, as: SIMD16<Float>.self)
        v.oddHalf = b.loadUnaligned(fromByteOffset: 4 * j, as: SIMD16<Float>.self)
        d.storeBytes(of: v, toByteOffset: 8 * j, as: SIMD32<Float>.self)
        j += 16
    }
    while 2 * j + 16 <= count {
        var v = SIMD16<Float>()
        v.evenHalf = a.loadUnaligned(fromByteOffset: 4 * j, as: V8.self)
        v.oddHalf = b.loadUnaligned(fromByteOffset: 4 * j, as: V8.self)
        d.storeBytes(of: v, toByteOffset: 8 * j, as: SIMD16<Float>.self)
        j += 8
    }
    while 2 * j < count {
        dst[2 * j] = even[j]
        if 2 * j + 1 < count { dst[2 * j + 1] = odd[j] }
        j += 1
    }
}
