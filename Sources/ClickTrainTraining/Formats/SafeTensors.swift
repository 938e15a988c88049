import ClickTrainCore
import Foundation

/// The safetensors format (what `safetensors.torch.load_file` reads): an 8-byte
/// little-endian header length, a JSON header mapping each tensor name to its dtype,
/// shape and byte range, an optional `__metadata__` string map, then the raw data.
public enum SafeTensors {
    /// The element types read and written: F32 weights, I64 counters, U8 masks and patterns.
    public enum DType: String, Sendable {
        case f32 = "F32", i64 = "I64", u8 = "U8"
        var size: Int {
            switch self {
            case .f32: return 4
            case .i64: return 8
            case .u8: return 1
            }
        }
    }

    /// One tensor as stored: float32, int64 or unsigned byte values.
    public enum Value: Sendable, Equatable {
        case f32(shape: [Int], values: [Float])
        case i64(shape: [Int], values: [Int64])
        case u8(shape: [Int], values: [UInt8])

        public var shape: [Int] {
            switch self { case .f32(let s, _), .i64(let s, _), .u8(let s, _): return s }
        }
        var dtype: DType {
            switch self {
            case .f32: return .f32
            case .i64: return .i64
            case .u8: return .u8
            }
        }
    }

    /// A file that is not valid safetensors, with the reason.
    public struct Error: Swift.Error, CustomStringConvertible {
        public let path: String
        public let detail: String
        public var description: String { "'\(path)' is not a valid safetensors file: \(detail)" }
    }

    /// Encodes tensors (in the given order) and metadata.
    public static func encode(_ tensors: [(String, Value)], metadata: [String: String] = [:]) -> Data {
        var header = "{"
        var parts: [String] = []
        if !metadata.isEmpty {
            let meta = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
            parts.append("\"__metadata__\":{\(meta.joined(separator: ","))}")
        }
        var offset = 0
        for (name, v) in tensors {
            let bytes = v.shape.reduce(1, *) * v.dtype.size
            parts.append("\(jsonString(name)):{\"dtype\":\"\(v.dtype.rawValue)\",\"shape\":[\(v.shape.map(String.init).joined(separator: ","))],\"data_offsets\":[\(offset),\(offset + bytes)]}")
            offset += bytes
        }
        header += parts.joined(separator: ",") + "}"
        var h = Array(header.utf8)
        while (h.count + 8) % 8 != 0 { h.append(0x20) }  // pad with spaces to 8-byte alignment
        var out = Data(capacity: 8 + h.count + offset)
        var len = UInt64(h.count).littleEndian
        withUnsafeBytes(of: &len) { out.append(contentsOf: $0) }
        out.append(contentsOf: h)
        for (_, v) in tensors {
            switch v {
            case .f32(_, let vals): vals.withUnsafeBytes { out.append(contentsOf: $0) }
            case .i64(_, let vals): vals.withUnsafeBytes { out.append(contentsOf: $0) }
            case .u8(_, let vals): out.append(contentsOf: vals)
            }
        }
        return out
    }

    /// Decodes a file's bytes; every inconsistency is an error naming `path`.
    public static func decode(_ data: Data, path: String) throws -> (tensors: [String: Value], order: [String], metadata: [String: String]) {
        func fail(_ d: String) -> Error { Error(path: path, detail: d) }
        guard data.count >= 8 else { throw fail("\(data.count) bytes, shorter than the 8-byte header length") }
        let n = data.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }.littleEndian
        guard n <= UInt64(data.count - 8) else {
            throw fail("header length \(n) exceeds the file (\(data.count) bytes): truncated or not safetensors")
        }
        let headerData = data.subdata(in: 8..<(8 + Int(n)))
        guard let obj = try? JSONSerialization.jsonObject(with: headerData), let header = obj as? [String: Any] else {
            throw fail("the header is not a JSON object")
        }
        let body = data.subdata(in: (8 + Int(n))..<data.count)
        var tensors: [String: Value] = [:]
        var metadata: [String: String] = [:]
        var ranges: [(String, Int)] = []
        for (name, entry) in header {
            if name == "__metadata__" {
                guard let m = entry as? [String: String] else { throw fail("__metadata__ must map strings to strings") }
                metadata = m
                continue
            }
            guard let e = entry as? [String: Any], let dts = e["dtype"] as? String,
                  let shape = e["shape"] as? [Int], let off = e["data_offsets"] as? [Int], off.count == 2
            else { throw fail("tensor '\(name)' lacks dtype, shape or data_offsets") }
            guard let dt = DType(rawValue: dts) else { throw fail("tensor '\(name)' has dtype \(dts); F32, I64 and U8 are supported") }
            // Sizes come from the file: negative or overflowing products are errors, not traps.
            var bytes = dt.size
            for d in shape {
                let (p, overflow) = bytes.multipliedReportingOverflow(by: d)
                guard d >= 0, !overflow, p <= body.count else {
                    throw fail("tensor '\(name)' has shape \(shape), larger than the file or negative")
                }
                bytes = p
            }
            guard off[0] >= 0, off[1] >= off[0], off[1] <= body.count, off[1] - off[0] == bytes else {
                throw fail("tensor '\(name)' (\(dts) \(shape)) has byte range \(off) in a \(body.count)-byte data section: truncated or corrupt")
            }
            let slice = body.subdata(in: off[0]..<off[1])
            switch dt {
            case .f32:
                tensors[name] = .f32(shape: shape, values: slice.withUnsafeBytes { Array($0.bindMemory(to: Float.self)) })
            case .i64:
                tensors[name] = .i64(shape: shape, values: slice.withUnsafeBytes { Array($0.bindMemory(to: Int64.self)) })
            case .u8:
                tensors[name] = .u8(shape: shape, values: [UInt8](slice))
            }
            ranges.append((name, off[0]))
        }
        return (tensors, ranges.sorted { $0.1 < $1.1 }.map(\.0), metadata)
    }

    public static func read(_ path: String) throws -> (tensors: [String: Value], order: [String], metadata: [String: String]) {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw Error(path: path, detail: "the file does not exist or cannot be read")
        }
        return try decode(data, path: path)
    }

    /// Writes atomically: a temporary file in the same folder, flushed, then renamed over
    /// the target, so a crash leaves either the old file or the new one, never half of one.
    public static func write(_ tensors: [(String, Value)], metadata: [String: String] = [:], to path: String) throws {
        try atomicWrite(encode(tensors, metadata: metadata), to: path)
    }

    static func jsonString(_ s: String) -> String {
        let d = try! JSONEncoder().encode(s)
        return String(decoding: d, as: UTF8.self)
    }
}

/// A file could not be written (full disk, file-size limit, permissions): names the file
/// and the system's reason.
public struct FileWriteError: Error, CustomStringConvertible {
    public let path: String
    public let code: Int32
    public var description: String { "cannot write '\(path)': \(String(cString: strerror(code)))" }
}

/// Writes `data` to `path` via a temporary file + fsync + rename (atomic on POSIX): a
/// failure at any point leaves the old file as it was and no temporary file behind.
public func atomicWrite(_ data: Data, to path: String) throws {
    let dir = (path as NSString).deletingLastPathComponent
    let tmp = (dir.isEmpty ? "." : dir) + "/.\((path as NSString).lastPathComponent).tmp-\(getpid())"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw FileWriteError(path: tmp, code: errno) }
    func fail(_ code: Int32) -> FileWriteError {
        close(fd)
        unlink(tmp)
        return FileWriteError(path: path, code: code)
    }
    let ok = data.withUnsafeBytes { raw -> Int32 in
        var done = 0
        while done < raw.count {
            let n = write(fd, raw.baseAddress! + done, raw.count - done)
            if n < 0 {
                if errno == EINTR { continue }
                return errno
            }
            done += n
        }
        return 0
    }
    if ok != 0 { throw fail(ok) }
    if fsync(fd) != 0 { throw fail(errno) }
    if close(fd) != 0 {
        let e = errno
        unlink(tmp)
        throw FileWriteError(path: path, code: e)
    }
    guard rename(tmp, path) == 0 else {
        let e = errno
        unlink(tmp)
        throw FileWriteError(path: path, code: e)
    }
}
