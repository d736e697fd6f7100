"""What our words mean outside containers: the reject class for retrieval.

Many container words have everyday or other-technical senses ("shipping container",
"popcorn kernel", "alpine skiing", "scratch card", "base class"). Each entry below describes
one such neighbouring topic in plain words. They are indexed next to the articles; when a
question matches one of these better than any article, dockwise says the question is not
its topic instead of answering with a random article. Entries describe whole topics,
not particular questions.
"""

from __future__ import annotations

OTHER_SENSES: dict[str, str] = {
    "shipping": (
        "shipping container cargo ship vessel freight port crane dock harbour harbor truck "
        "rail intermodal twenty-foot TEU panamax logistics sea ocean buy a "
        "container home conversion"
    ),
    "kitchen": (
        "food storage containers tupperware glass plastic lid airtight microwave safe "
        "dishwasher freezer fridge lunch box meal prep leftovers jar kitchen"
    ),
    "cooking": (
        "recipe pasta dinner cook bake oven sauce cake layers icing frosting sponge bread "
        "pizza soup meal weeknight ingredients"
    ),
    "plants": (
        "popcorn corn kernel seed grain nut wheat maize pop microwave popcorn plant roots "
        "tree garden soil water prune grow"
    ),
    "outdoors": (
        "alpine skiing ski snowboard snow mountain resort hiking hike lake climbing "
        "trail lodge winter holiday weather forecast rain sunny temperature"
    ),
    "clothing": "layers clothing jacket dress warm cold weather base layer wool outfit",
    "pets-and-games": (
        "dog cat pet scratching itch fleas vet ear scratch card lottery ticket win "
        "prize scratch off game"
    ),
    "desktop": (
        "desktop wallpaper theme gnome kde screen resolution monitor dual boot install "
        "ubuntu alongside windows laptop usb stick bootloader grub partition wifi driver "
        "printer bluetooth log in daily use settings app store"
    ),
    "kernel-development": (
        "compile the linux kernel from source menuconfig kernel config bzimage patch "
        "mainline release driver development "
        "kernel panic on boot laptop"
    ),
    "math-and-ml": (
        "square root math equation kernel trick svm support vector machine kernel density "
        "estimate plot gaussian convolution neural network gpu training statistics"
    ),
    "programming": (
        "class inheritance base class parent class derived subclass c++ java object oriented "
        "entry point of a c program main function list slicing python list dictionary "
        "git rebase merge branch commit sql query javascript react css regex "
        "garbage collection jvm heap"
    ),
    "virtual-desktop": (
        "virtualbox vmware workstation windows 11 iso tpm secure boot guest additions "
        "vm won't boot snapshot shared folder usb passthrough"
    ),
    "photos": "photo picture jpeg png resize crop camera gallery pixel image editing",
    "chit-chat": (
        "hello hi hey good morning evening thanks thank you bye joke funny who are you "
        "how are you weather today capital of france news sports"
    ),
    "chemistry": "acid base chemistry ph alkaline solution reaction molecule",
}
