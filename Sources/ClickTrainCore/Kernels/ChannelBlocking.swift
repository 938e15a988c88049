import CDNNL

/// oneDNN's convolutions work on channel-blocked activations, [N, C/B, H, W, B] (`nChw8c`
/// on AVX2, `nChw16c` on AVX-512). Between two oneDNN convolutions the activations stay in
/// that layout, so no convolution reorders its input or output; batch norm, ReLU, the
/// residual add and pooling work on it directly. A tensor's `channelBlock` says which
/// layout its data is in (0: NCHW). Blocked tensors never leave the layers that know the
/// layout: a layer a user writes receives NCHW (see `BlockedLayoutLayer`).
package enum ChannelBlocking {
    /// The block size oneDNN's convolutions choose for their activations on this CPU (8 or
    /// 16), or nil when they choose something else (activations then stay NCHW).
    package static let size: Int? = probe()

    /// Whether activations of `shape` can be blocked: [N, C, H, W] with C a multiple of the block.
    package static func canBlock(_ shape: [Int]) -> Bool {
        guard let b = size else { return false }
        return shape.count == 4 && shape[1] % b == 0
    }

    /// Asks oneDNN which source layout a typical 3x3 convolution (32 → 32 channels) wants.
    private static func probe() -> Int? {
        let g = ConvGeometry(batch: 8, inChannels: 32, height: 16, width: 16, outChannels: 32, kernelSize: 3, padding: 1)
        var src = memoryDesc(g.inputShape, dnnl_format_tag_any), wei = memoryDesc(g.weightShape, dnnl_format_tag_any)
        var dst = memoryDesc(g.outputShape, dnnl_format_tag_any)
        let dims = dnnlDims([1, 1])
        var cd = dnnl_convolution_desc_t()
        let st = withUnsafeBytes(of: dims) { raw in
            let p = raw.baseAddress!.assumingMemoryBound(to: Int64.self)
            return dnnl_convolution_forward_desc_init(&cd, dnnl_forward_training, dnnl_convolution_direct, &src, &wei, nil,
                                                      &dst, p, p, p)
        }
        guard st == dnnl_success else { return nil }
        var pd: dnnl_primitive_desc_t?
        guard withUnsafePointer(to: &cd, { dnnl_primitive_desc_create(&pd, $0, nil, DNNLContext.shared.engine, nil) })
            == dnnl_success, let pd else { return nil }
        defer { dnnl_primitive_desc_destroy(pd) }
        let chosen = queryMD(pd, dnnl_query_src_md)
        if mdEqual(chosen, memoryDesc(g.inputShape, dnnl_nChw8c)) { return 8 }
        if mdEqual(chosen, memoryDesc(g.inputShape, dnnl_nChw16c)) { return 16 }
        return nil
    }

    /// The oneDNN format tag of a layout.
    static func tag(_ block: Int) -> dnnl_format_tag_t {
        switch block {
        case 0: return dnnl_nchw
        case 8: return dnnl_nChw8c
        case 16: return dnnl_nChw16c
        default: fatalError("no oneDNN layout for channel block \(block)")
        }
    }
}

/// Copies activations between NCHW and the blocked layout, into buffers it owns (a layer
/// keeps one for the conversions at its edges). Reorders are built once per shape.
package struct LayoutConverter {
    private var buffers = BufferCache()
    private var reorders: [Key: (DNNLMemory, DNNLMemory, DNNLReorder)] = [:]

    private struct Key: Hashable { var shape: [Int], from: Int, to: Int }

    package init() {}

    /// `x` in NCHW: `x` itself when it already is, else a converted copy.
    package mutating func plain(_ x: Tensor) -> Tensor { converted(x, to: 0) }

    /// `x` in layout `block` (0: NCHW): `x` itself when it already is, else a converted copy.
    package mutating func converted(_ x: Tensor, to block: Int) -> Tensor {
        if x.channelBlock == block { return x }
        let y = buffers.get(x.shape)
        convert(x, into: y, block: block)
        return y
    }

    /// Writes `x` into `y` (same shape) in layout `block`, and tags `y` with it.
    package mutating func convert(_ x: Tensor, into y: Tensor, block: Int) {
        precondition(x.shape == y.shape, "layout conversion: \(x.shape) into \(y.shape)")
        y.channelBlock = block
        if x.channelBlock == block {
            if x !== y { y.copy(from: x) }
            return
        }
        let key = Key(shape: x.shape, from: x.channelBlock, to: block)
        let r: (DNNLMemory, DNNLMemory, DNNLReorder)
        if let cached = reorders[key] {
            r = cached
        } else {
            let a = DNNLMemory(memoryDesc(x.shape, ChannelBlocking.tag(key.from)), allocate: false)
            let b = DNNLMemory(memoryDesc(x.shape, ChannelBlocking.tag(key.to)), allocate: false)
            r = (a, b, DNNLReorder(from: a, to: b))
            reorders[key] = r
        }
        r.0.bind(x.data)
        r.1.bind(y.data)
        r.2.run()
    }
}
