"""digitsapp: a Flower / PyTorch app on scikit-learn's handwritten digits (8x8, 10 classes)."""

import torch
from datasets import Dataset
from flwr_datasets.partitioner import IidPartitioner
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader


class Net(nn.Module):
    """A small fully connected network for 8x8 digit images."""

    def __init__(self):
        super().__init__()
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))

    def forward(self, x):
        return self.layers(x)


partitioner = None  # Cache the partitioner, as Flower's quickstarts cache their FederatedDataset


def apply_transforms(batch):
    """Images as float tensors in [0, 1], shape (1, 8, 8)."""
    batch["image"] = [torch.tensor(image, dtype=torch.float32).unsqueeze(0) / 16.0 for image in batch["image"]]
    return batch


def load_data(partition_id: int, num_partitions: int, batch_size: int = 32):
    """Load partition `partition_id` of the digits, split 80/20 into train and test loaders."""
    global partitioner
    if partitioner is None:
        digits = load_digits()
        dataset = Dataset.from_dict({"image": digits.images.tolist(), "label": digits.target.tolist()})
        partitioner = IidPartitioner(num_partitions=num_partitions)
        partitioner.dataset = dataset
    partition = partitioner.load_partition(partition_id)
    partition_train_test = partition.train_test_split(test_size=0.2, seed=42)
    partition_train_test = partition_train_test.with_transform(apply_transforms)
    trainloader = DataLoader(partition_train_test["train"], batch_size=batch_size, shuffle=True)
    testloader = DataLoader(partition_train_test["test"], batch_size=batch_size)
    return trainloader, testloader


def train(net, trainloader, epochs, lr, device):
    """Train the model on the training set."""
    net.to(device)
    criterion = nn.CrossEntropyLoss().to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    net.train()
    running_loss = 0.0
    for _ in range(epochs):
        for batch in trainloader:
            images, labels = batch["image"].to(device), batch["label"].to(device)
            optimizer.zero_grad()
            loss = criterion(net(images), labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
    return running_loss / (epochs * len(trainloader))


def test(net, testloader, device):
    """Validate the model on the test set."""
    net.to(device)
    criterion = nn.CrossEntropyLoss()
    correct, loss = 0, 0.0
    net.eval()
    with torch.no_grad():
        for batch in testloader:
            images, labels = batch["image"].to(device), batch["label"].to(device)
            outputs = net(images)
            loss += criterion(outputs, labels).item()
            correct += (torch.max(outputs.data, 1)[1] == labels).sum().item()
    return loss / len(testloader), correct / len(testloader.dataset)
