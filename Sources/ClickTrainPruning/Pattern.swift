/// A 3x3 kernel pattern: which of the 9 positions (row-major, 0 = top-left, 4 = centre)
/// a kernel keeps.
public struct Pattern: Hashable, Sendable, Codable, CustomStringConvertible {
    /// Bit i set: position i kept.
    public let bits: UInt16

    public init(bits: UInt16) {
        precondition(bits < 512, "Pattern: only 9 positions, got bits \(bits)")
        self.bits = bits
    }

    public init(positions: [Int]) {
        var b: UInt16 = 0
        for p in positions {
            precondition((0..<9).contains(p), "Pattern: position \(p) outside 0..<9")
            b |= 1 << p
        }
        self.init(bits: b)
    }

    public var positions: [Int] { (0..<9).filter { bits & (1 << $0) != 0 } }
    public var count: Int { bits.nonzeroBitCount }
    public func contains(_ p: Int) -> Bool { bits & (1 << p) != 0 }

    /// The pattern as three rows of "x" and ".", e.g. `x x . / x x . / . . .`.
    public var description: String {
        (0..<3).map { r in (0..<3).map { contains(r * 3 + $0) ? "x" : "." }.joined() }.joined(separator: "/")
    }
}

/// The fixed generic pools. The 4-pattern pool is the paper's: the four 2x2 blocks
/// around the centre. The 8- and 12-pattern pools extend it with centre-connected
/// shapes; they are ours (the official lists were not available offline), and the
/// dynamic pool is the default.
public enum GenericPools {
    public static let corners: [Pattern] = [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]].map(Pattern.init)
    /// Corners plus the four T shapes (centre and three of its four direct neighbours).
    public static let eight: [Pattern] = corners + [[1, 3, 4, 5], [1, 4, 5, 7], [3, 4, 5, 7], [1, 3, 4, 7]].map(Pattern.init)
    /// Eight plus the four L shapes through the centre's column and row.
    public static let twelve: [Pattern] = eight + [[1, 4, 7, 8], [0, 1, 4, 7], [3, 4, 5, 6], [2, 3, 4, 5]].map(Pattern.init)

    public static func pool(size: Int) -> [Pattern]? {
        switch size {
        case 4: return corners
        case 8: return eight
        case 12: return twelve
        default: return nil
        }
    }
}
