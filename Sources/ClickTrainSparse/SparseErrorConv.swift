import ClickTrainCore

/// A pruned gradient map [N, K, OH, OW] stored per (n, k) plane as the positions and
/// values of its non-zeros (CSR over planes); a position is `row << 16 | column`, so the
/// kernels need no division. Buffers are kept and grown, never shrunk.
public final class SparseErrorMap {
    public private(set) var planes = 0
    public private(set) var planeStart: UnsafeMutablePointer<Int32>
    public private(set) var positions: UnsafeMutablePointer<Int32>
    public private(set) var values: UnsafeMutablePointer<Float>
    private var planeCapacity = 0, nnzCapacity = 0

    public init() {
        planeStart = .allocate(capacity: 1)
        positions = .allocate(capacity: 1)
        values = .allocate(capacity: 1)
    }

    deinit {
        planeStart.deallocate()
        positions.deallocate()
        values.deallocate()
    }

    public var nonZeros: Int { Int(planeStart[planes]) }

    /// Compresses `dy` ([planes, rows, columns]).
    public func build(_ dy: Tensor, planes: Int, rows: Int, columns: Int) {
        let planeSize = rows * columns
        precondition(planes * planeSize == dy.count, "SparseErrorMap: \(planes)x\(planeSize) for \(dy.shape)")
        precondition(rows < 1 << 15 && columns < 1 << 16, "SparseErrorMap: plane \(rows)x\(columns) too large")
        if planeCapacity < planes + 1 {
            planeStart.deallocate()
            planeStart = .allocate(capacity: planes + 1)
            planeCapacity = planes + 1
        }
        self.planes = planes
        let src = dy.data, starts = planeStart
        // Count, prefix-sum, fill: two passes over the (mostly zero) map.
        Threads.parallelRanges(planes) { r in
            for p in r {
                var c: Int32 = 0
                let row = src + p * planeSize
                for i in 0..<planeSize where row[i] != 0 { c += 1 }
                starts[p + 1] = c
            }
        }
        starts[0] = 0
        for p in 0..<planes { starts[p + 1] += starts[p] }
        let nnz = Int(starts[planes])
        if nnzCapacity < nnz {
            positions.deallocate()
            values.deallocate()
            let cap = max(nnz, nnzCapacity * 3 / 2)
            positions = .allocate(capacity: cap)
            values = .allocate(capacity: cap)
            nnzCapacity = cap
        }
        let pos = positions, val = values
        Threads.parallelRanges(planes) { r in
            for p in r {
                var o = Int(starts[p])
                let row = src + p * planeSize
                for y in 0..<rows {
                    for x in 0..<columns where row[y * columns + x] != 0 {
                        pos[o] = Int32(y << 16 | x)
                        val[o] = row[y * columns + x]
                        o += 1
                    }
                }
            }
        }
    }
}

/// Backward convolutions that skip the zeros of a pruned output gradient
/// (activation-gradient pruning, SPEC §4). Work is proportional to the non-zeros: each
/// one scatters `value · W[k, :, tap]` into the input gradient and gathers
/// `value · x[n, :, tap]` into the weight gradient, vectorised over input channels in
/// channels-last copies of x, W and dx (the layout conversions are part of the cost and
/// of the benchmark).
public final class SparseErrorConvKernel {
    public let geometry: ConvGeometry
    public let map = SparseErrorMap()
    private var xNHWC: Tensor, dxNHWC: Tensor
    private var wOHWI: Tensor, dwOHWI: Tensor

    /// Channel counts must be multiples of 8 (the SIMD width); `supports` tells.
    public static func supports(_ g: ConvGeometry) -> Bool { g.inChannels % 8 == 0 }

    public init(_ g: ConvGeometry) {
        precondition(SparseErrorConvKernel.supports(g), "sparse error-map kernels need input channels divisible by 8: \(g)")
        geometry = g
        xNHWC = Tensor(shape: [g.batch, g.height, g.width, g.inChannels])
        dxNHWC = Tensor(shape: [g.batch, g.height, g.width, g.inChannels])
        wOHWI = Tensor(shape: [g.outChannels, g.kernelSize, g.kernelSize, g.inChannels])
        dwOHWI = Tensor(shape: [g.outChannels, g.kernelSize, g.kernelSize, g.inChannels])
    }

    /// Input and weight gradients from the (pruned) `gradOutput`; `gradInput` nil skips
    /// the input gradient. Gradients are overwritten. Returns the non-zero count used.
    @discardableResult
    public func backward(input: Tensor, weight: Tensor, gradOutput: Tensor, gradInput: Tensor?, gradWeight: Tensor,
                         gradBias: Tensor?) -> Int {
        let g = geometry
        precondition(gradOutput.shape == g.outputShape && input.shape == g.inputShape, "sparse conv backward: shapes")
        let n = g.batch, c = g.inChannels, k = g.outChannels, ks = g.kernelSize, h = g.height, w = g.width
        let oh = g.outHeight, ow = g.outWidth, s = g.stride, pad = g.padding
        map.build(gradOutput, planes: n * k, rows: oh, columns: ow)
        let starts = map.planeStart, pos = map.positions, val = map.values

        if let db = gradBias {
            for f in 0..<k {
                var acc: Float = 0
                for b in 0..<n { for e in Int(starts[b * k + f])..<Int(starts[b * k + f + 1]) { acc += val[e] } }
                db[f] = acc
            }
        }

        // Weight gradient: threads split the output channels; x goes channels-last first.
        toChannelsLast(input.data, xNHWC.data, n: n, c: c, hw: h * w)
        let xh = xNHWC.data, dwh = dwOHWI.data
        withChannelCount(c) { cc in
            Threads.parallelRanges(k) { fr in
                for f in fr {
                    let dwf = dwh + f * ks * ks * cc
                    dwf.update(repeating: 0, count: ks * ks * cc)
                    for b in 0..<n {
                        let plane = b * k + f
                        let xb = xh + b * h * w * cc
                        for e in Int(starts[plane])..<Int(starts[plane + 1]) {
                            let p = Int(pos[e]), v = val[e]
                            let iy0 = (p >> 16) * s - pad, ix0 = (p & 0xFFFF) * s - pad
                            for ky in max(0, -iy0)..<min(ks, h - iy0) {
                                let xr = xb + ((iy0 + ky) * w + ix0) * cc, dr = dwf + ky * ks * cc
                                for kx in max(0, -ix0)..<min(ks, w - ix0) {
                                    axpy(v, xr + kx * cc, dr + kx * cc, cc)
                                }
                            }
                        }
                    }
                }
            }
        }
        fromChannelsLast(dwOHWI.data, gradWeight.data, n: k, c: c, hw: ks * ks)

        guard let dx = gradInput else { return map.nonZeros }
        // Input gradient: threads split the batch.
        toChannelsLast(weight.data, wOHWI.data, n: k, c: c, hw: ks * ks)
        let wh = wOHWI.data, dxh = dxNHWC.data
        withChannelCount(c) { cc in
            Threads.parallelRanges(n) { br in
                for b in br {
                    let dxb = dxh + b * h * w * cc
                    dxb.update(repeating: 0, count: h * w * cc)
                    for f in 0..<k {
                        let plane = b * k + f
                        let wf = wh + f * ks * ks * cc
                        for e in Int(starts[plane])..<Int(starts[plane + 1]) {
                            let p = Int(pos[e]), v = val[e]
                            let iy0 = (p >> 16) * s - pad, ix0 = (p & 0xFFFF) * s - pad
                            for ky in max(0, -iy0)..<min(ks, h - iy0) {
                                let wr = wf + ky * ks * cc, dr = dxb + ((iy0 + ky) * w + ix0) * cc
                                for kx in max(0, -ix0)..<min(ks, w - ix0) {
                                    axpy(v, wr + kx * cc, dr + kx * cc, cc)
                                }
                            }
                        }
                    }
                }
            }
        }
        fromChannelsLast(dxNHWC.data, dx.data, n: n, c: c, hw: h * w)
        return map.nonZeros
    }
}

/// Calls `body` with the channel count as a literal for the common sizes, so the inner
/// `axpy` loops unroll completely.
@inline(__always)
func withChannelCount(_ c: Int, _ body: (Int) -> Void) {
    switch c {
    case 8: body(8)
    case 16: body(16)
    case 32: body(32)
    case 64: body(64)
    default: body(c)
    }
}

/// y[0..<n] += a · x[0..<n], n a multiple of 8.
@inline(__always)
func axpy(_ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ n: Int) {
    let av = SIMD8<Float>(repeating: a)
    let xr = UnsafeRawPointer(x), yr = UnsafeMutableRawPointer(y)
    var i = 0
    while i < n {
        let xv = xr.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
        let yv = yr.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
        yr.storeBytes(of: yv.addingProduct(av, xv), toByteOffset: i * 4, as: SIMD8<Float>.self)
        i += 8
    }
}

/// [n][c][hw] → [n][hw][c], in tiles so both sides stay in cache.
func toChannelsLast(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, n: Int, c: Int, hw: Int) {
    Threads.parallelRanges(n) { r in
        for b in r {
            let s = src + b * c * hw, d = dst + b * c * hw
            var p0 = 0
            while p0 < hw {
                let p1 = min(p0 + 64, hw)
                for ch in 0..<c { for p in p0..<p1 { d[p * c + ch] = s[ch * hw + p] } }
                p0 = p1
            }
        }
    }
}

/// [n][hw][c] → [n][c][hw].
func fromChannelsLast(_ src: UnsafePointer<Float>, _ dst: UnsafeMutablePointer<Float>, n: Int, c: Int, hw: Int) {
    Threads.parallelRanges(n) { r in
        for b in r {
            let s = src + b * c * hw, d = dst + b * c * hw
            var p0 = 0
            while p0 < hw {
                let p1 = min(p0 + 64, hw)
                for ch in 0..<c { for p in p0..<p1 { d[ch * hw + p] = s[p * c + ch] } }
                p0 = p1
            }
        }
    }
}
