/// Vectorised reductions. A plain `for i { acc += p[i] }` over Float is not vectorised
/// (floating-point addition is not reassociated), so it runs at one add per FP-add
/// latency; eight independent partial sums in a SIMD register run ~8-16x faster.

/// Σ p[i].
@inlinable
package func vectorSum(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD8<Float>(repeating: 0), acc2 = SIMD8<Float>(repeating: 0)
    let raw = UnsafeRawPointer(p)
    var i = 0
    while i + 16 <= n {
        acc += raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
        acc2 += raw.loadUnaligned(fromByteOffset: (i + 8) * 4, as: SIMD8<Float>.self)
        i += 16
    }
    var s = (acc + acc2).sum()
    while i < n { s += p[i]; i += 1 }
    return s
}

/// Σ |p[i]|.
@inlinable
package func vectorSumAbs(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
    var acc = SIMD8<Float>(repeating: 0), acc2 = SIMD8<Float>(repeating: 0)
    let raw = UnsafeRawPointer(p)
    var i = 0
    while i + 16 <= n {
        let a = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<UInt32>.self) & 0x7FFF_FFFF
        let b = raw.loadUnaligned(fromByteOffset: (i + 8) * 4, as: SIMD8<UInt32>.self) & 0x7FFF_FFFF
        acc += unsafeBitCast(a, to: SIMD8<Float>.self)
        acc2 += unsafeBitCast(b, to: SIMD8<Float>.self)
        i += 16
    }
    var s = (acc + acc2).sum()
    while i < n { s += abs(p[i]); i += 1 }
    return s
}

/// Σ (p[i] - c)².
@inlinable
package func vectorSumSquaredDeviation(_ p: UnsafePointer<Float>, _ n: Int, from c: Float) -> Float {
    var acc = SIMD8<Float>(repeating: 0)
    let cv = SIMD8<Float>(repeating: c)
    let raw = UnsafeRawPointer(p)
    var i = 0
    while i + 8 <= n {
        let d = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) - cv
        acc.addProduct(d, d)
        i += 8
    }
    var s = acc.sum()
    while i < n { let d = p[i] - c; s += d * d; i += 1 }
    return s
}

/// (Σ g[i], Σ g[i]·(x[i] - c)), with g[i] taken as 0 where `mask[i]` is not positive when a
/// mask is given (the gradient through a ReLU whose output is `mask`).
@inlinable
package func vectorSumAndDot(_ g: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ n: Int, xMinus c: Float,
                             mask: UnsafePointer<Float>? = nil) -> (Float, Float)
{
    var a1 = SIMD8<Float>(repeating: 0), a2 = SIMD8<Float>(repeating: 0)
    let cv = SIMD8<Float>(repeating: c), zero = SIMD8<Float>(repeating: 0)
    let gr = UnsafeRawPointer(g), xr = UnsafeRawPointer(x)
    var i = 0
    while i + 8 <= n {
        var gv = gr.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
        if let mask {
            gv.replace(with: zero, where: .!(UnsafeRawPointer(mask).loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) .> zero))
        }
        let xv = xr.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) - cv
        a1 += gv
        a2.addProduct(gv, xv)
        i += 8
    }
    var s1 = a1.sum(), s2 = a2.sum()
    while i < n {
        let gi = mask.map { $0[i] > 0 ? g[i] : 0 } ?? g[i]
        s1 += gi
        s2 += gi * (x[i] - c)
        i += 1
    }
    return (s1, s2)
}
