import Foundation

/// 64-byte aligned float32 storage. Owned by exactly one `Tensor` family (a tensor and
/// its reshaped views); freed when the last of them goes away.
public final class Storage: @unchecked Sendable {
    public let pointer: UnsafeMutablePointer<Float>
    public let count: Int

    public init(count: Int) {
        precondition(count >= 0, "Storage: negative element count \(count)")
        self.count = count
        let bytes = max(count, 1) * MemoryLayout<Float>.stride
        let raw = UnsafeMutableRawPointer.allocate(byteCount: (bytes + 63) & ~63, alignment: 64)
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
        pointer.initialize(repeating: 0, count: max(count, 1))
    }

    deinit { UnsafeMutableRawPointer(pointer).deallocate() }
}

/// A float32 tensor in row-major (NCHW for images) layout.
///
/// Tensors are reference types: layers own their output and gradient buffers and
/// hand them to the next layer without copying (the llm.c style); a buffer returned
/// by `forward`/`backward` stays valid until that layer runs again.
public final class Tensor: @unchecked Sendable, CustomStringConvertible {
    public let shape: [Int]
    public let count: Int
    public let storage: Storage
    /// 0 when the data is in row-major (NCHW) order; B when it is channel-blocked,
    /// [N, C/B, H, W, B], oneDNN's layout. Only the library's own layers hand blocked
    /// activations to each other (a layer you write, or a model's caller, sees NCHW);
    /// `array` gives NCHW order either way, `data` and the subscript the storage order.
    public package(set) var channelBlock = 0

    /// A zero-filled tensor of the given shape.
    public init(shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "Tensor: negative dimension in \(shape)")
        self.shape = shape
        self.count = shape.reduce(1, *)
        self.storage = Storage(count: count)
    }

    /// A tensor holding `values`, which must have `shape.product` elements.
    public convenience init(shape: [Int], values: [Float]) {
        self.init(shape: shape)
        precondition(values.count == count, "Tensor: \(values.count) values for shape \(shape)")
        values.withUnsafeBufferPointer { data.update(from: $0.baseAddress!, count: count) }
    }

    private init(shape: [Int], storage: Storage) {
        self.shape = shape
        self.count = shape.reduce(1, *)
        precondition(count <= storage.count, "view \(shape) larger than its storage")
        self.storage = storage
    }

    /// A view of the first `n` rows (along the first axis) of this tensor (no copy).
    public func firstRows(_ n: Int) -> Tensor {
        precondition(n >= 0 && n <= shape[0], "firstRows(\(n)) of \(shape)")
        var s = shape
        s[0] = n
        let t = Tensor(shape: s, storage: storage)
        t.channelBlock = channelBlock
        return t
    }

    /// The first element; every kernel works through this pointer.
    @inlinable public var data: UnsafeMutablePointer<Float> { storage.pointer }

    /// A view with another shape over the same storage (no copy).
    public func reshaped(_ newShape: [Int]) -> Tensor {
        let n = newShape.reduce(1, *)
        precondition(n == count, "reshape: \(shape) has \(count) elements, \(newShape) has \(n)")
        precondition(channelBlock == 0, "reshape of channel-blocked activations \(shape)")
        return Tensor(shape: newShape, storage: storage)
    }

    public var rank: Int { shape.count }

    /// The elements as an array in row-major (NCHW) order, whatever the layout of the data
    /// (copies; for tests and I/O, not hot loops).
    public var array: [Float] {
        guard channelBlock != 0 else { return Array(UnsafeBufferPointer(start: data, count: count)) }
        let n = shape[0], c = shape[1], hw = shape[2] * shape[3], b = channelBlock
        var out = [Float](repeating: 0, count: count)
        for i in 0..<n {
            for ch in 0..<c {
                for s in 0..<hw { out[(i * c + ch) * hw + s] = data[((i * (c / b) + ch / b) * hw + s) * b + ch % b] }
            }
        }
        return out
    }

    /// Element `i` in storage order (see `channelBlock`).
    public subscript(i: Int) -> Float {
        get { data[i] }
        set { data[i] = newValue }
    }

    public func fill(_ v: Float) { data.update(repeating: v, count: count) }
    public func zero() { fill(0) }

    /// Copies `other`'s elements (same element count required).
    public func copy(from other: Tensor) {
        precondition(other.count == count, "copy: \(other.shape) into \(shape)")
        data.update(from: other.data, count: count)
        channelBlock = other.channelBlock
    }

    public func clone() -> Tensor {
        let t = Tensor(shape: shape)
        t.copy(from: self)
        return t
    }

    /// A new tensor with only the given indices along `axis` (channel pruning).
    public func keeping(axis: Int, indices: [Int]) -> Tensor {
        precondition(axis >= 0 && axis < rank && indices.allSatisfy { $0 >= 0 && $0 < shape[axis] },
                     "keeping(axis: \(axis)) of \(shape)")
        var ns = shape
        ns[axis] = indices.count
        let out = Tensor(shape: ns)
        let inner = shape[(axis + 1)...].reduce(1, *), outer = shape[..<axis].reduce(1, *)
        for o in 0..<outer {
            for (j, i) in indices.enumerated() {
                (out.data + (o * indices.count + j) * inner).update(from: data + (o * shape[axis] + i) * inner, count: inner)
            }
        }
        return out
    }

    public var description: String { "Tensor\(shape)" }
}

/// A layer's output or gradient buffers, one per shape seen: how layers keep their
/// buffers across steps so that a warmed-up step allocates no tensor, even when training
/// batches and evaluation batches (or a last, smaller batch) alternate.
public struct BufferCache {
    /// The buffer handed out most recently.
    public internal(set) var last: Tensor?
    var byShape: [[Int]: Tensor] = [:]

    public init() {}

    /// The buffer for `shape`, allocated (zero-filled) the first time.
    public mutating func get(_ shape: [Int]) -> Tensor {
        if let t = last, t.shape == shape { return t }
        if let t = byShape[shape] { last = t; return t }
        let t = Tensor(shape: shape)
        byShape[shape] = t
        last = t
        return t
    }

    /// Frees every buffer (e.g. after a model changes shape).
    public mutating func removeAll() { last = nil; byShape = [:] }
}
