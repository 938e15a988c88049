import CDNNL

/// The geometry of one 2-D convolution call (groups = 1, square stride and padding).
package struct ConvGeometry: Hashable, Sendable, CustomStringConvertible {
    package var batch: Int
    package var inChannels: Int
    package var height: Int
    package var width: Int
    package var outChannels: Int
    package var kernelSize: Int
    package var stride: Int
    package var padding: Int

    package init(batch: Int, inChannels: Int, height: Int, width: Int, outChannels: Int,
                kernelSize: Int, stride: Int = 1, padding: Int = 0) {
        self.batch = batch
        self.inChannels = inChannels
        self.height = height
        self.width = width
        self.outChannels = outChannels
        self.kernelSize = kernelSize
        self.stride = stride
        self.padding = padding
    }

    package var outHeight: Int { (height + 2 * padding - kernelSize) / stride + 1 }
    package var outWidth: Int { (width + 2 * padding - kernelSize) / stride + 1 }
    package var inputShape: [Int] { [batch, inChannels, height, width] }
    package var outputShape: [Int] { [batch, outChannels, outHeight, outWidth] }
    package var weightShape: [Int] { [outChannels, inChannels, kernelSize, kernelSize] }
    /// Multiply-adds of the forward pass.
    package var macs: Int { batch * outChannels * outHeight * outWidth * inChannels * kernelSize * kernelSize }
    package var description: String {
        "conv \(inChannels)->\(outChannels) k\(kernelSize) s\(stride) p\(padding) on \(batch)x\(height)x\(width)"
    }
}

/// A convolution's memory descriptors: the API's layouts (activations NCHW or blocked,
/// weights OIHW, bias) and the `any` layouts oneDNN chooses from.
struct ConvDescriptors {
    let src, weights, dst, bias: dnnl_memory_desc_t
    let anySrc, anyWeights, anyDst: dnnl_memory_desc_t

    init(_ g: ConvGeometry, srcBlock: Int, dstBlock: Int) {
        src = memoryDesc(g.inputShape, ChannelBlocking.tag(srcBlock))
        weights = memoryDesc(g.weightShape, dnnl_oihw)
        dst = memoryDesc(g.outputShape, ChannelBlocking.tag(dstBlock))
        bias = memoryDesc([g.outChannels], dnnl_x)
        anySrc = memoryDesc(g.inputShape, dnnl_format_tag_any)
        anyWeights = memoryDesc(g.weightShape, dnnl_format_tag_any)
        anyDst = memoryDesc(g.outputShape, dnnl_format_tag_any)
    }
}

/// Dense convolution on oneDNN: forward, input gradient and weight gradient.
///
/// Weights at the API are OIHW; activations are NCHW or channel-blocked (`srcBlock` for the
/// input and its gradient, `dstBlock` for the output and its gradient; see
/// `ChannelBlocking`). oneDNN picks its fastest layouts; where one differs from the API's,
/// a reorder runs once per call, and the copies made in `forward` (input, weights) are
/// reused by `backward`. Blocked activations need no reorder.
package final class DenseConv2dKernel {
    package let geometry: ConvGeometry
    package let hasBias: Bool
    package let srcBlock: Int, dstBlock: Int

    private let fwd: DNNLPrimitive
    private let srcUser, weiUser, dstUser, biasUser: DNNLMemory
    private let srcFwd, weiFwd, dstFwd: DNNLMemory
    private let srcReorder, weiReorder, dstReorder: DNNLReorder?

    private let bwdData: DNNLPrimitive
    private let diffDstUser, diffSrcUser: DNNLMemory
    private let diffDstBD, weiBD, diffSrcBD: DNNLMemory
    private let diffDstReorderBD, weiReorderBD, diffSrcReorder: DNNLReorder?

    private let bwdWeights: DNNLPrimitive
    private let diffWeiUser, diffBiasUser: DNNLMemory
    private let srcBW, diffDstBW, diffWeiBW: DNNLMemory
    private let srcReorderBW, diffDstReorderBW, diffWeiReorder: DNNLReorder?

    package init(_ g: ConvGeometry, bias: Bool, srcBlock: Int = 0, dstBlock: Int = 0) {
        precondition(g.outHeight > 0 && g.outWidth > 0, "convolution \(g) has an empty output")
        geometry = g
        hasBias = bias
        self.srcBlock = srcBlock
        self.dstBlock = dstBlock
        let engine = DNNLContext.shared.engine
        let d = ConvDescriptors(g, srcBlock: srcBlock, dstBlock: dstBlock)
        let (srcMD, weiMD, dstMD, biasMD) = (d.src, d.weights, d.dst, d.bias)
        var (anySrc, anyWei, anyDst, bmd) = (d.anySrc, d.anyWeights, d.anyDst, biasMD)
        var strides = dnnlDims([g.stride, g.stride])
        var pads = dnnlDims([g.padding, g.padding])

        func makeMem(_ md: dnnl_memory_desc_t, like user: DNNLMemory) -> DNNLMemory {
            mdEqual(md, user.md) ? user : DNNLMemory(md, allocate: true)
        }
        func reorder(_ a: DNNLMemory, _ b: DNNLMemory) -> DNNLReorder? { a === b ? nil : DNNLReorder(from: a, to: b) }

        // Forward.
        var cd = dnnl_convolution_desc_t()
        dnnlCheck(withUnsafePointer(to: &bmd) { bp in
            dnnl_convolution_forward_desc_init(
                &cd, dnnl_forward_training, dnnl_convolution_direct, &anySrc, &anyWei, bias ? bp : nil, &anyDst,
                &strides.0, &pads.0, &pads.0)
        }, "conv fwd desc \(g)")
        var pd: dnnl_primitive_desc_t?
        dnnlCheck(withUnsafePointer(to: &cd) { dnnl_primitive_desc_create(&pd, $0, nil, engine, nil) }, "conv fwd pd \(g)")
        fwd = DNNLPrimitive(pd: pd!)
        let fwdPD = pd!
        srcUser = DNNLMemory(srcMD, allocate: false)
        weiUser = DNNLMemory(weiMD, allocate: false)
        dstUser = DNNLMemory(dstMD, allocate: false)
        biasUser = DNNLMemory(biasMD, allocate: false)
        srcFwd = makeMem(queryMD(fwd.pd, dnnl_query_src_md), like: srcUser)
        weiFwd = makeMem(queryMD(fwd.pd, dnnl_query_weights_md), like: weiUser)
        dstFwd = makeMem(queryMD(fwd.pd, dnnl_query_dst_md), like: dstUser)
        srcReorder = reorder(srcUser, srcFwd)
        weiReorder = reorder(weiUser, weiFwd)
        dstReorder = reorder(dstFwd, dstUser)

        // Backward data.
        var anySrc2 = memoryDesc(g.inputShape, dnnl_format_tag_any)
        var bd = dnnl_convolution_desc_t()
        dnnlCheck(dnnl_convolution_backward_data_desc_init(
            &bd, dnnl_convolution_direct, &anySrc2, &anyWei, &anyDst, &strides.0, &pads.0, &pads.0),
            "conv bwd data desc \(g)")
        var pdBD: dnnl_primitive_desc_t?
        dnnlCheck(withUnsafePointer(to: &bd) { dnnl_primitive_desc_create(&pdBD, $0, nil, engine, fwdPD) },
                  "conv bwd data pd \(g)")
        bwdData = DNNLPrimitive(pd: pdBD!)
        diffDstUser = DNNLMemory(dstMD, allocate: false)
        diffSrcUser = DNNLMemory(srcMD, allocate: false)
        diffDstBD = makeMem(queryMD(bwdData.pd, dnnl_query_diff_dst_md), like: diffDstUser)
        let weiBDmd = queryMD(bwdData.pd, dnnl_query_weights_md)
        weiBD = mdEqual(weiBDmd, weiFwd.md) ? weiFwd : makeMem(weiBDmd, like: weiUser)
        diffSrcBD = makeMem(queryMD(bwdData.pd, dnnl_query_diff_src_md), like: diffSrcUser)
        diffDstReorderBD = reorder(diffDstUser, diffDstBD)
        weiReorderBD = (weiBD === weiFwd) ? nil : reorder(weiUser, weiBD)
        diffSrcReorder = reorder(diffSrcBD, diffSrcUser)

        // Backward weights.
        var wd = dnnl_convolution_desc_t()
        var anyWei2 = memoryDesc(g.weightShape, dnnl_format_tag_any)
        var anySrc3 = memoryDesc(g.inputShape, dnnl_format_tag_any)
        var anyDst3 = memoryDesc(g.outputShape, dnnl_format_tag_any)
        dnnlCheck(withUnsafePointer(to: &bmd) { bp in
            dnnl_convolution_backward_weights_desc_init(
                &wd, dnnl_convolution_direct, &anySrc3, &anyWei2, bias ? bp : nil, &anyDst3,
                &strides.0, &pads.0, &pads.0)
        }, "conv bwd weights desc \(g)")
        var pdBW: dnnl_primitive_desc_t?
        dnnlCheck(withUnsafePointer(to: &wd) { dnnl_primitive_desc_create(&pdBW, $0, nil, engine, fwdPD) },
                  "conv bwd weights pd \(g)")
        bwdWeights = DNNLPrimitive(pd: pdBW!)
        diffWeiUser = DNNLMemory(weiMD, allocate: false)
        diffBiasUser = DNNLMemory(biasMD, allocate: false)
        let srcBWmd = queryMD(bwdWeights.pd, dnnl_query_src_md)
        srcBW = mdEqual(srcBWmd, srcFwd.md) ? srcFwd : makeMem(srcBWmd, like: srcUser)
        srcReorderBW = (srcBW === srcFwd) ? nil : reorder(srcUser, srcBW)
        let ddBWmd = queryMD(bwdWeights.pd, dnnl_query_diff_dst_md)
        diffDstBW = mdEqual(ddBWmd, diffDstBD.md) ? diffDstBD : makeMem(ddBWmd, like: diffDstUser)
        diffDstReorderBW = reorder(diffDstUser, diffDstBW)
        diffWeiBW = makeMem(queryMD(bwdWeights.pd, dnnl_query_diff_weights_md), like: diffWeiUser)
        diffWeiReorder = reorder(diffWeiBW, diffWeiUser)
    }

    /// `output = conv(input, weight) + bias`.
    /// - Parameters: input [N, C, H, W]; weight [K, C, k, k]; bias [K]; output [N, K, OH, OW].
    package func forward(input: Tensor, weight: Tensor, bias: Tensor?, output: Tensor) {
        let g = geometry
        precondition(input.shape == g.inputShape, "conv forward: input \(input.shape), expected \(g.inputShape)")
        precondition(weight.shape == g.weightShape, "conv forward: weight \(weight.shape), expected \(g.weightShape)")
        precondition(output.shape == g.outputShape, "conv forward: output \(output.shape), expected \(g.outputShape)")
        precondition(input.channelBlock == srcBlock, "conv forward: input layout \(input.channelBlock), planned \(srcBlock)")
        output.channelBlock = dstBlock
        srcUser.bind(input.data)
        weiUser.bind(weight.data)
        dstUser.bind(output.data)
        srcReorder?.run()
        weiReorder?.run()
        var args: [(Int32, DNNLMemory)] = [(DNNL_ARG_SRC, srcFwd), (DNNL_ARG_WEIGHTS, weiFwd), (DNNL_ARG_DST, dstFwd)]
        if hasBias {
            precondition(bias?.count == g.outChannels, "conv forward: bias needs \(g.outChannels) values")
            biasUser.bind(bias!.data)
            args.append((DNNL_ARG_BIAS, biasUser))
        }
        fwd.execute(args)
        dstReorder?.run()
    }

    /// Input and weight gradients. Must follow a `forward` on the same `input` and
    /// `weight` (their blocked copies are reused). `gradInput` nil skips the input
    /// gradient (the first layer needs none). Gradients are overwritten, not added.
    package func backward(input: Tensor, weight: Tensor, gradOutput: Tensor, gradInput: Tensor?,
                         gradWeight: Tensor, gradBias: Tensor?) {
        let g = geometry
        precondition(gradOutput.shape == g.outputShape, "conv backward: grad \(gradOutput.shape), expected \(g.outputShape)")
        precondition(gradWeight.shape == g.weightShape, "conv backward: grad weight \(gradWeight.shape)")
        precondition(gradOutput.channelBlock == dstBlock, "conv backward: gradient layout \(gradOutput.channelBlock), planned \(dstBlock)")
        diffDstUser.bind(gradOutput.data)
        var diffDstReady = false
        if let gi = gradInput {
            precondition(gi.shape == g.inputShape, "conv backward: grad input \(gi.shape), expected \(g.inputShape)")
            diffSrcUser.bind(gi.data)
            gi.channelBlock = srcBlock
            weiUser.bind(weight.data)
            weiReorderBD?.run()
            diffDstReorderBD?.run()
            diffDstReady = true
            bwdData.execute([(DNNL_ARG_DIFF_DST, diffDstBD), (DNNL_ARG_WEIGHTS, weiBD), (DNNL_ARG_DIFF_SRC, diffSrcBD)])
            diffSrcReorder?.run()
        }
        if !(diffDstReady && diffDstBW === diffDstBD) { diffDstReorderBW?.run() }
        srcUser.bind(input.data)
        srcReorderBW?.run()
        diffWeiUser.bind(gradWeight.data)
        var args: [(Int32, DNNLMemory)] = [
            (DNNL_ARG_SRC, srcBW), (DNNL_ARG_DIFF_DST, diffDstBW), (DNNL_ARG_DIFF_WEIGHTS, diffWeiBW),
        ]
        if hasBias {
            precondition(gradBias?.count == g.outChannels, "conv backward: grad bias needs \(g.outChannels) values")
            diffBiasUser.bind(gradBias!.data)
            args.append((DNNL_ARG_DIFF_BIAS, diffBiasUser))
        }
        bwdWeights.execute(args)
        diffWeiReorder?.run()
    }
}

/// Inference convolution on oneDNN with the following batch norm folded in by the caller
/// (weights scaled per filter, the shift as bias), and the residual add and ReLU applied
/// as oneDNN post-ops while the output is written: one pass where the layers one by one
/// make three. Activations as in `DenseConv2dKernel`.
package final class FoldedConv2dKernel {
    package let geometry: ConvGeometry
    package let srcBlock: Int, dstBlock: Int
    package let residual: Bool
    private let fwd: DNNLPrimitive
    private let srcUser, weiUser, dstUser, biasUser: DNNLMemory
    private let srcFwd, weiFwd, dstFwd: DNNLMemory
    private let srcReorder, weiReorder, dstReorder, dstReorderIn: DNNLReorder?

    /// `residual`: the output buffer holds the residual when `forward` is called and the
    /// result is added to it (a sum post-op); `relu`: max(·, 0) at the end.
    package init(_ g: ConvGeometry, srcBlock: Int, dstBlock: Int, residual: Bool, relu: Bool) {
        precondition(g.outHeight > 0 && g.outWidth > 0, "convolution \(g) has an empty output")
        geometry = g
        self.srcBlock = srcBlock
        self.dstBlock = dstBlock
        self.residual = residual
        let engine = DNNLContext.shared.engine
        let d = ConvDescriptors(g, srcBlock: srcBlock, dstBlock: dstBlock)
        let (srcMD, weiMD, dstMD, biasMD) = (d.src, d.weights, d.dst, d.bias)
        var (anySrc, anyWei, anyDst, bmd) = (d.anySrc, d.anyWeights, d.anyDst, biasMD)
        let dims = (dnnlDims([g.stride, g.stride]), dnnlDims([g.padding, g.padding]))
        var cd = dnnl_convolution_desc_t()
        withUnsafeBytes(of: dims.0) { s in
            withUnsafeBytes(of: dims.1) { p in
                let sp = s.baseAddress!.assumingMemoryBound(to: Int64.self), pp = p.baseAddress!.assumingMemoryBound(to: Int64.self)
                dnnlCheck(dnnl_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct, &anySrc,
                                                             &anyWei, &bmd, &anyDst, sp, pp, pp), "folded conv desc \(g)")
            }
        }
        var attr: dnnl_primitive_attr_t?
        var ops: dnnl_post_ops_t?
        dnnlCheck(dnnl_primitive_attr_create(&attr), "attr_create")
        dnnlCheck(dnnl_post_ops_create(&ops), "post_ops_create")
        defer {
            dnnl_post_ops_destroy(ops)
            dnnl_primitive_attr_destroy(attr)
        }
        if residual { dnnlCheck(dnnl_post_ops_append_sum(ops, 1), "post_ops sum") }
        if relu { dnnlCheck(dnnl_post_ops_append_eltwise(ops, 1, dnnl_eltwise_relu, 0, 0), "post_ops relu") }
        dnnlCheck(dnnl_primitive_attr_set_post_ops(attr, ops), "set_post_ops")
        var pd: dnnl_primitive_desc_t?
        dnnlCheck(withUnsafePointer(to: &cd) { dnnl_primitive_desc_create(&pd, $0, attr, engine, nil) }, "folded conv pd \(g)")
        fwd = DNNLPrimitive(pd: pd!)
        srcUser = DNNLMemory(srcMD, allocate: false)
        weiUser = DNNLMemory(weiMD, allocate: false)
        dstUser = DNNLMemory(dstMD, allocate: false)
        biasUser = DNNLMemory(biasMD, allocate: false)
        func makeMem(_ md: dnnl_memory_desc_t, like user: DNNLMemory) -> DNNLMemory {
            mdEqual(md, user.md) ? user : DNNLMemory(md, allocate: true)
        }
        srcFwd = makeMem(queryMD(fwd.pd, dnnl_query_src_md), like: srcUser)
        weiFwd = makeMem(queryMD(fwd.pd, dnnl_query_weights_md), like: weiUser)
        dstFwd = makeMem(queryMD(fwd.pd, dnnl_query_dst_md), like: dstUser)
        srcReorder = srcFwd === srcUser ? nil : DNNLReorder(from: srcUser, to: srcFwd)
        weiReorder = weiFwd === weiUser ? nil : DNNLReorder(from: weiUser, to: weiFwd)
        dstReorder = dstFwd === dstUser ? nil : DNNLReorder(from: dstFwd, to: dstUser)
        dstReorderIn = dstFwd === dstUser || !residual ? nil : DNNLReorder(from: dstUser, to: dstFwd)
    }

    /// `output = relu(conv(input, weight) + bias + output)`, the residual and ReLU parts as
    /// planned. - Parameters: weight [K, C, k, k] (batch norm folded); bias [K].
    package func forward(input: Tensor, weight: Tensor, bias: Tensor, output: Tensor) {
        let g = geometry
        precondition(input.shape == g.inputShape && input.channelBlock == srcBlock,
                     "folded conv: input \(input.shape) layout \(input.channelBlock), planned \(g.inputShape) \(srcBlock)")
        precondition(output.shape == g.outputShape && weight.shape == g.weightShape && bias.count == g.outChannels,
                     "folded conv: output \(output.shape) weight \(weight.shape), planned \(g)")
        precondition(!residual || output.channelBlock == dstBlock, "folded conv: residual layout \(output.channelBlock)")
        srcUser.bind(input.data)
        weiUser.bind(weight.data)
        dstUser.bind(output.data)
        biasUser.bind(bias.data)
        srcReorder?.run()
        weiReorder?.run()
        dstReorderIn?.run()
        fwd.execute([(DNNL_ARG_SRC, srcFwd), (DNNL_ARG_WEIGHTS, weiFwd), (DNNL_ARG_BIAS, biasUser), (DNNL_ARG_DST, dstFwd)])
        dstReorder?.run()
        output.channelBlock = dstBlock
    }
}
