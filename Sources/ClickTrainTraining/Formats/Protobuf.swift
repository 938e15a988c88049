import Foundation

/// A protocol-buffers message being written: the wire format's varints, length-delimited
/// fields and fixed 32-bit floats, enough for the ONNX messages the exporter writes.
struct ProtoMessage {
    private(set) var bytes: [UInt8] = []

    private mutating func varint(_ value: UInt64) {
        var v = value
        while v >= 0x80 {
            bytes.append(UInt8(v & 0x7f) | 0x80)
            v >>= 7
        }
        bytes.append(UInt8(v))
    }

    private mutating func key(_ field: Int, _ wireType: UInt64) { varint(UInt64(field) << 3 | wireType) }

    /// An int32/int64/enum field (wire type 0); negative values take ten bytes, as in protobuf.
    mutating func int(_ field: Int, _ value: Int64) {
        key(field, 0)
        varint(UInt64(bitPattern: value))
    }

    /// A repeated int64 field, one entry per value (the unpacked form every parser reads).
    mutating func ints(_ field: Int, _ values: [Int64]) { for v in values { int(field, v) } }

    mutating func float(_ field: Int, _ value: Float) {
        key(field, 5)
        withUnsafeBytes(of: value.bitPattern.littleEndian) { bytes += $0 }
    }

    mutating func data(_ field: Int, _ payload: [UInt8]) {
        key(field, 2)
        varint(UInt64(payload.count))
        bytes += payload
    }

    mutating func string(_ field: Int, _ s: String) { data(field, Array(s.utf8)) }

    mutating func message(_ field: Int, _ m: ProtoMessage) { data(field, m.bytes) }
}
