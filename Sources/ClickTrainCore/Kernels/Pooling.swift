/// Output size of a pooling window along one axis (floor mode, as PyTorch).
@inlinable public func pooledSize(_ n: Int, kernel: Int, stride: Int, padding: Int) -> Int {
    (n + 2 * padding - kernel) / stride + 1
}

/// Max pooling; `argmax` gets, per output, the flat input index within its plane (-1 when the
/// window lies entirely in the padding).
package func maxPoolForward(x: Tensor, kernel: Int, stride: Int, padding: Int, y: Tensor, argmax: UnsafeMutablePointer<Int32>) {
    let nc = x.shape[0] * x.shape[1], h = x.shape[2], w = x.shape[3]
    let oh = y.shape[2], ow = y.shape[3]
    let xp = x.data, yp = y.data
    if kernel == 2 && stride == 2 && padding == 0 {
        maxPool2x2(xp, h: h, w: w, planes: nc, y: yp, oh: oh, ow: ow, argmax: argmax)
        return
    }
    Threads.parallelRanges(nc) { r in
        for plane in r {
            let src = xp + plane * h * w, dst = yp + plane * oh * ow, idx = argmax + plane * oh * ow
            for oy in 0..<oh {
                for ox in 0..<ow {
                    var best = -Float.infinity, bi: Int32 = -1
                    let y0 = oy * stride - padding, x0 = ox * stride - padding
                    for ky in max(0, -y0)..<min(kernel, h - y0) {
                        for kx in max(0, -x0)..<min(kernel, w - x0) {
                            let i = (y0 + ky) * w + x0 + kx
                            if src[i] > best || bi < 0 { best = src[i]; bi = Int32(i) }
                        }
                    }
                    dst[oy * ow + ox] = bi < 0 ? 0 : best
                    idx[oy * ow + ox] = bi
                }
            }
        }
    }
}

/// 2x2 windows, stride 2, no padding (VGG's pooling): the generic loop without its window
/// bounds, the four taps in the same order (the first maximum wins, as there).
private func maxPool2x2(_ xp: UnsafeMutablePointer<Float>, h: Int, w: Int, planes: Int, y yp: UnsafeMutablePointer<Float>,
                        oh: Int, ow: Int, argmax: UnsafeMutablePointer<Int32>) {
    Threads.parallelRanges(planes) { r in
        for plane in r {
            let src = xp + plane * h * w, dst = yp + plane * oh * ow, idx = argmax + plane * oh * ow
            for oy in 0..<oh {
                let top = 2 * oy * w, r0 = src + top, r1 = r0 + w
                let d = dst + oy * ow, a = idx + oy * ow
                for ox in 0..<ow {
                    let i = 2 * ox
                    var best = r0[i], bi = top + i
                    if r0[i + 1] > best { best = r0[i + 1]; bi = top + i + 1 }
                    if r1[i] > best { best = r1[i]; bi = top + w + i }
                    if r1[i + 1] > best { best = r1[i + 1]; bi = top + w + i + 1 }
                    d[ox] = best
                    a[ox] = Int32(bi)
                }
            }
        }
    }
}

/// Max pooling backward: each output gradient goes to its window's maximum (overwrites dx).
package func maxPoolBackward(gradOutput dy: Tensor, argmax: UnsafePointer<Int32>, gradInput dx: Tensor) {
    let nc = dx.shape[0] * dx.shape[1], hw = dx.shape[2] * dx.shape[3]
    let ohw = dy.shape[2] * dy.shape[3]
    let gp = dy.data, dp = dx.data
    Threads.parallelRanges(nc) { r in
        for plane in r {
            let d = dp + plane * hw, g = gp + plane * ohw, idx = argmax + plane * ohw
            d.update(repeating: 0, count: hw)
            for o in 0..<ohw where idx[o] >= 0 { d[Int(idx[o])] += g[o] }
        }
    }
}

/// Average pooling, padding counted in the divisor (PyTorch's default `count_include_pad`).
package func avgPoolForward(x: Tensor, kernel: Int, stride: Int, padding: Int, y: Tensor) {
    let nc = x.shape[0] * x.shape[1], h = x.shape[2], w = x.shape[3]
    let oh = y.shape[2], ow = y.shape[3]
    let xp = x.data, yp = y.data
    Threads.parallelRanges(nc) { r in
        for plane in r {
            let src = xp + plane * h * w, dst = yp + plane * oh * ow
            for oy in 0..<oh {
                for ox in 0..<ow {
                    let y0 = oy * stride - padding, x0 = ox * stride - padding
                    let ye = min(y0 + kernel, h + padding), xe = min(x0 + kernel, w + padding)
                    let div = Float((ye - y0) * (xe - x0))
                    var s: Float = 0
                    for yy in max(0, y0)..<min(ye, h) { for xx in max(0, x0)..<min(xe, w) { s += src[yy * w + xx] } }
                    dst[oy * ow + ox] = s / div
                }
            }
        }
    }
}

/// Average pooling backward (overwrites dx).
package func avgPoolBackward(gradOutput dy: Tensor, kernel: Int, stride: Int, padding: Int, gradInput dx: Tensor) {
    let nc = dx.shape[0] * dx.shape[1], h = dx.shape[2], w = dx.shape[3]
    let oh = dy.shape[2], ow = dy.shape[3]
    let gp = dy.data, dp = dx.data
    Threads.parallelRanges(nc) { r in
        for plane in r {
            let d = dp + plane * h * w, g = gp + plane * oh * ow
            d.update(repeating: 0, count: h * w)
            for oy in 0..<oh {
                for ox in 0..<ow {
                    let y0 = oy * stride - padding, x0 = ox * stride - padding
                    let ye = min(y0 + kernel, h + padding), xe = min(x0 + kernel, w + padding)
                    let v = g[oy * ow + ox] / Float((ye - y0) * (xe - x0))
                    for yy in max(0, y0)..<min(ye, h) { for xx in max(0, x0)..<min(xe, w) { d[yy * w + xx] += v } }
                }
            }
        }
    }
}

/// Global average pooling: [N, C, H, W] → [N, C].
package func globalAvgPoolForward(x: Tensor, y: Tensor) {
    let nc = x.shape[0] * x.shape[1], hw = x.shape[2] * x.shape[3]
    let inv = 1 / Float(hw)
    for p in 0..<nc {
        let s = x.data + p * hw
        var acc: Float = 0
        for i in 0..<hw { acc += s[i] }
        y.data[p] = acc * inv
    }
}

/// Global average pooling backward: spreads each gradient evenly over its plane.
package func globalAvgPoolBackward(gradOutput dy: Tensor, gradInput dx: Tensor) {
    let nc = dx.shape[0] * dx.shape[1], hw = dx.shape[2] * dx.shape[3]
    let inv = 1 / Float(hw)
    for p in 0..<nc { (dx.data + p * hw).update(repeating: dy.data[p] * inv, count: hw) }
}

// Channel-blocked activations ([N, C/B, H, W, B], see `ChannelBlocking`): the same results,
// each channel's values taken in the same order, eight channels per vector.

private typealias F8 = SIMD8<Float>

/// Global average pooling of blocked `x` into [N, C].
package func globalAvgPoolForwardBlocked(x: Tensor, y: Tensor) {
    let b = x.channelBlock, c = x.shape[1], hw = x.shape[2] * x.shape[3]
    let inv = 1 / Float(hw)
    for plane in 0..<(x.shape[0] * c / b) {
        let src = UnsafeRawPointer(x.data + plane * hw * b)
        for h in 0..<(b / 8) {
            var acc = F8()
            for i in 0..<hw { acc += src.loadUnaligned(fromByteOffset: (i * b + h * 8) * 4, as: F8.self) }
            UnsafeMutableRawPointer(y.data + plane * b + h * 8).storeBytes(of: acc * inv, as: F8.self)
        }
    }
}

/// Backward of `globalAvgPoolForwardBlocked`: `dx` (blocked) gets each gradient spread evenly.
package func globalAvgPoolBackwardBlocked(gradOutput dy: Tensor, gradInput dx: Tensor, block b: Int) {
    let c = dx.shape[1], hw = dx.shape[2] * dx.shape[3]
    let inv = 1 / Float(hw)
    for plane in 0..<(dx.shape[0] * c / b) {
        let dst = dx.data + plane * hw * b, g = dy.data + plane * b
        for i in 0..<hw { for l in 0..<b { dst[i * b + l] = g[l] * inv } }
    }
    dx.channelBlock = b
}

/// 2x2 max pooling, stride 2, no padding, of blocked `x` into blocked `y`; `argmax` gets,
/// per output value, the spatial index of its maximum within the plane (the first maximum
/// of the four taps wins, as in `maxPoolForward`).
package func maxPool2x2Blocked(x: Tensor, y: Tensor, argmax: UnsafeMutablePointer<Int32>) {
    let b = x.channelBlock, h = x.shape[2], w = x.shape[3], oh = y.shape[2], ow = y.shape[3]
    let xp = x.data, yp = y.data
    Threads.parallelRanges(x.shape[0] * x.shape[1] / b) { r in
        for plane in r {
            let src = UnsafeRawPointer(xp + plane * h * w * b)
            let dst = UnsafeMutableRawPointer(yp + plane * oh * ow * b)
            let idx = UnsafeMutableRawPointer(argmax + plane * oh * ow * b)
            for oy in 0..<oh {
                for ox in 0..<ow {
                    let i0 = 2 * oy * w + 2 * ox
                    for half in 0..<(b / 8) {
                        func tap(_ i: Int) -> F8 { src.loadUnaligned(fromByteOffset: (i * b + half * 8) * 4, as: F8.self) }
                        var best = tap(i0), bi = SIMD8<Int32>(repeating: Int32(i0))
                        func consider(_ t: Int) {
                            let v = tap(t), m = v .> best
                            best.replace(with: v, where: m)
                            bi.replace(with: Int32(t), where: m)
                        }
                        consider(i0 + 1)
                        consider(i0 + w)
                        consider(i0 + w + 1)
                        let o = ((oy * ow + ox) * b + half * 8) * 4
                        dst.storeBytes(of: best, toByteOffset: o, as: F8.self)
                        idx.storeBytes(of: bi, toByteOffset: o, as: SIMD8<Int32>.self)
                    }
                }
            }
        }
    }
    y.channelBlock = b
}

/// Backward of `maxPool2x2Blocked` (overwrites the blocked `dx`).
package func maxPoolBackwardBlocked(gradOutput dy: Tensor, argmax: UnsafePointer<Int32>, gradInput dx: Tensor, block b: Int) {
    let hw = dx.shape[2] * dx.shape[3], ohw = dy.shape[2] * dy.shape[3]
    let gp = dy.data, dp = dx.data
    Threads.parallelRanges(dx.shape[0] * dx.shape[1] / b) { r in
        for plane in r {
            let d = dp + plane * hw * b, g = gp + plane * ohw * b, idx = argmax + plane * ohw * b
            d.update(repeating: 0, count: hw * b)
            for o in 0..<ohw { for l in 0..<b { d[Int(idx[o * b + l]) * b + l] += g[o * b + l] } }
        }
    }
    dx.channelBlock = b
}
