"""The ClickTrain model zoo written in PyTorch, layer for layer and name for name.

Used by bench-pytorch.py (timing the same networks) and check-safetensors.py (checking
that a model.safetensors written by clicktrain has the state_dict of the same model).
"""
import torch.nn as nn


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, shortcut_name="shortcut"):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut_name = shortcut_name
        sc = None
        if stride != 1 or cin != cout:
            sc = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        setattr(self, shortcut_name, sc)

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        sc = getattr(self, self.shortcut_name)
        return self.relu(out + (sc(x) if sc is not None else x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, width, stride):
        super().__init__()
        cout = width * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (self.downsample(x) if self.downsample is not None else x))


class CifarResNet(nn.Module):
    def __init__(self, depth, channels, classes):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        cin = 16
        for stage, width in enumerate([16, 32, 64]):
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(cin, width, 2 if stage > 0 and b == 0 else 1))
                cin = width
            setattr(self, f"layer{stage + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.avgpool(x).flatten(1))


class ImageNetResNet(nn.Module):
    def __init__(self, blocks, bottleneck, channels, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for stage, count in enumerate(blocks):
            width = 64 << stage
            bs = []
            for b in range(count):
                stride = 2 if stage > 0 and b == 0 else 1
                if bottleneck:
                    bs.append(Bottleneck(cin, width, stride))
                    cin = width * 4
                else:
                    bs.append(BasicBlock(cin, width, stride, "downsample"))
                    cin = width
            setattr(self, f"layer{stage + 1}", nn.Sequential(*bs))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


VGG_CFG = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


class VGG(nn.Module):
    def __init__(self, cfg, channels, size, classes):
        super().__init__()
        layers, c, s = [], channels, size
        for v in cfg:
            if v == "M":
                if s >= 2:  # a pool is skipped once the map is 1x1, as in ClickTrain's VGG
                    layers.append(nn.MaxPool2d(2))
                    s //= 2
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(c * s * s, classes)

    def forward(self, x):
        return self.classifier(self.flatten(self.features(x)))


class LeNet5(nn.Module):
    def __init__(self, channels, size, classes):
        super().__init__()
        s2 = (size // 2 - 4) // 2
        self.conv1 = nn.Conv2d(channels, 6, 5, padding=2)
        self.relu1 = nn.ReLU()
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.relu2 = nn.ReLU()
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(16 * s2 * s2, 120)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(120, 84)
        self.relu4 = nn.ReLU()
        self.fc3 = nn.Linear(84, classes)

    def forward(self, x):
        x = self.pool1(self.relu1(self.conv1(x)))
        x = self.flatten(self.pool2(self.relu2(self.conv2(x))))
        return self.fc3(self.relu4(self.fc2(self.relu3(self.fc1(x)))))


def canonical(name):
    n = name.lower().replace("-", "").replace("_", "")
    if n.startswith("vgg") and n.endswith("bn"):
        n = n[:-2]
    return "lenet5" if n == "lenet" else n


def make(name, channels=3, size=32, classes=10):
    n = canonical(name)
    if n == "lenet5":
        return LeNet5(channels, size, classes)
    if n in ("resnet20", "resnet32", "resnet56", "resnet110"):
        return CifarResNet(int(n[6:]), channels, classes)
    if n in VGG_CFG:
        return VGG(VGG_CFG[n], channels, size, classes)
    if n == "resnet18":
        return ImageNetResNet([2, 2, 2, 2], False, channels, classes)
    if n == "resnet50":
        return ImageNetResNet([3, 4, 6, 3], True, channels, classes)
    raise SystemExit(f"unknown model '{name}'")
