import CDNNL

/// The oneDNN CPU engine and stream every dense primitive runs on.
final class DNNLContext: @unchecked Sendable {
    static let shared = DNNLContext()
    let engine: dnnl_engine_t
    let stream: dnnl_stream_t

    private init() {
        var e: dnnl_engine_t?
        dnnlCheck(dnnl_engine_create(&e, dnnl_cpu, 0), "engine_create")
        var s: dnnl_stream_t?
        dnnlCheck(dnnl_stream_create(&s, e, dnnl_stream_default_flags.rawValue), "stream_create")
        engine = e!
        stream = s!
    }
}

/// oneDNN failures here are programmer errors (shapes are validated before a
/// primitive is built), so they stop the process with the call that failed.
@inline(__always)
func dnnlCheck(_ status: dnnl_status_t, _ what: @autoclosure () -> String) {
    if status != dnnl_success {
        fatalError("oneDNN \(what()) failed with status \(status.rawValue)")
    }
}

func memoryDesc(_ shape: [Int], _ tag: dnnl_format_tag_t) -> dnnl_memory_desc_t {
    var md = dnnl_memory_desc_t()
    var d = dnnlDims(shape)
    let status = withUnsafePointer(to: &d) { p in
        p.withMemoryRebound(to: Int64.self, capacity: 12) {
            dnnl_memory_desc_init_by_tag(&md, Int32(shape.count), $0, dnnl_f32, tag)
        }
    }
    dnnlCheck(status, "memory_desc_init \(shape)")
    return md
}

func dnnlDims(_ values: [Int]) -> dnnl_dims_t {
    var d: dnnl_dims_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
    withUnsafeMutablePointer(to: &d) { p in
        p.withMemoryRebound(to: Int64.self, capacity: 12) { q in
            for (i, v) in values.enumerated() { q[i] = Int64(v) }
        }
    }
    return d
}

func mdEqual(_ a: dnnl_memory_desc_t, _ b: dnnl_memory_desc_t) -> Bool {
    var a = a, b = b
    return dnnl_memory_desc_equal(&a, &b) != 0
}

func queryMD(_ pd: dnnl_primitive_desc_t, _ what: dnnl_query_t) -> dnnl_memory_desc_t {
    guard let p = dnnl_primitive_desc_query_md(pd, what, 0) else { fatalError("oneDNN query_md \(what) failed") }
    return p.pointee
}

/// A oneDNN memory object whose buffer is either ours (an aligned `Storage` sized for
/// its, possibly blocked, layout) or a user tensor set with `bind` before each call.
final class DNNLMemory {
    let md: dnnl_memory_desc_t
    let memory: dnnl_memory_t
    let owned: Storage?

    init(_ md: dnnl_memory_desc_t, allocate: Bool) {
        self.md = md
        var m: dnnl_memory_t?
        var d = md
        if allocate {
            let bytes = dnnl_memory_desc_get_size(&d)
            let st = Storage(count: (bytes + 3) / 4)
            owned = st
            dnnlCheck(dnnl_memory_create(&m, &d, DNNLContext.shared.engine, st.pointer), "memory_create")
        } else {
            owned = nil
            dnnlCheck(dnnl_memory_create(&m, &d, DNNLContext.shared.engine, nil), "memory_create")
        }
        memory = m!
    }

    func bind(_ p: UnsafeMutablePointer<Float>) {
        dnnlCheck(dnnl_memory_set_data_handle(memory, p), "set_data_handle")
    }

    deinit { dnnl_memory_destroy(memory) }
}

/// A primitive plus its descriptor.
final class DNNLPrimitive {
    let pd: dnnl_primitive_desc_t
    let primitive: dnnl_primitive_t

    init(pd: dnnl_primitive_desc_t) {
        self.pd = pd
        var p: dnnl_primitive_t?
        dnnlCheck(dnnl_primitive_create(&p, pd), "primitive_create")
        primitive = p!
    }

    func execute(_ args: [(Int32, DNNLMemory)]) {
        let ctx = DNNLContext.shared
        var a = args.map { dnnl_exec_arg_t(arg: $0.0, memory: $0.1.memory) }
        dnnlCheck(dnnl_primitive_execute(primitive, ctx.stream, Int32(a.count), &a), "execute")
        dnnlCheck(dnnl_stream_wait(ctx.stream), "stream_wait")
    }

    deinit {
        dnnl_primitive_destroy(primitive)
        dnnl_primitive_desc_destroy(pd)
    }
}

/// Converts between two layouts of the same tensor.
final class DNNLReorder {
    let prim: DNNLPrimitive
    let src: DNNLMemory
    let dst: DNNLMemory

    init(from src: DNNLMemory, to dst: DNNLMemory) {
        let e = DNNLContext.shared.engine
        var pd: dnnl_primitive_desc_t?
        var s = src.md, d = dst.md
        dnnlCheck(dnnl_reorder_primitive_desc_create(&pd, &s, e, &d, e, nil), "reorder_pd")
        prim = DNNLPrimitive(pd: pd!)
        self.src = src
        self.dst = dst
    }

    func run() { prim.execute([(DNNL_ARG_FROM, src), (DNNL_ARG_TO, dst)]) }
}
